-- One round trip per append (infra/recorder.py): the same steps as the `eventsourcing`
-- recorder's pipelined transaction (lock timeout, the table lock that keeps the log gap-free,
-- NOTIFY, the insert) in one function, called as one statement in autocommit. The lock is held
-- until that statement's implicit transaction commits, exactly as before.
CREATE OR REPLACE FUNCTION linkflow_append_events(
    ids uuid[], versions bigint[], topics text[], states bytea[]
) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    LOCK TABLE linkflow_events IN EXCLUSIVE MODE;
    NOTIFY linkflow_events;
    RETURN QUERY
        INSERT INTO linkflow_events (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states)
        RETURNING notification_id;
END;
$$;
