-- Appends that check what their command read (infra/recorder.py, `EventStore.read_checked`).
-- A command may decide on a cached aggregate without asking PostgreSQL whether it changed; it
-- passes (id, version) for each such read, and its events are written only if none of those
-- aggregates has an event after that version (0: the aggregate did not exist). The check runs
-- after the table lock is taken, when no other append can commit, so it is exactly as strong
-- as reading the aggregates inside the append's transaction. A failed check raises SQLSTATE
-- LF001 with the stale ids, comma-separated, as its DETAIL; nothing is written.
DROP FUNCTION IF EXISTS linkflow_append_events(uuid[], bigint[], text[], bytea[]);
CREATE OR REPLACE FUNCTION linkflow_append_events(
    ids uuid[], versions bigint[], topics text[], states bytea[],
    read_ids uuid[], read_versions bigint[]
) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
DECLARE
    stale uuid[];
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    LOCK TABLE linkflow_events IN EXCLUSIVE MODE;
    IF cardinality(read_ids) > 0 THEN
        SELECT array_agg(DISTINCT r.id) INTO stale
        FROM unnest(read_ids, read_versions) AS r(id, version)
        WHERE EXISTS (
            SELECT 1 FROM linkflow_events e
            WHERE e.originator_id = r.id AND e.originator_version > r.version
        );
        IF stale IS NOT NULL THEN
            RAISE EXCEPTION 'an aggregate the command read has changed since'
                USING ERRCODE = 'LF001', DETAIL = array_to_string(stale, ',');
        END IF;
    END IF;
    NOTIFY linkflow_events;
    RETURN QUERY
        INSERT INTO linkflow_events (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states)
        RETURNING notification_id;
END;
$$;
