-- Issue 15: the append writes each event's metadata (migration 016's actor and request_id) and
-- the workspace it belongs to, which the workspace event log (GET /workspaces/{ws}/events)
-- reads by position.
--   workspace_id  the domain event's "workspace_id": the workspace whose log holds the event;
--                 NULL for the events of users, the e-mail index and refresh-token families
--                 (domain/user.py, domain/token_family.py), whose "workspace_id" is a user's
--                 personal workspace, not the event's tenancy;
--                 passed by the writer (infra/recorder.py), which has the domain event at hand,
--                 rather than parsed from `state` under the table lock; existing rows are
--                 backfilled from their state's JSON here.
-- The append function keeps its one round trip and binary arrays; it takes the metadata as
-- three more arrays, one element per event (actors jsonb[]: NULL is the system; request_ids
-- text[]; workspace_ids uuid[]). Every group-commit request passes its own actor and request id
-- for its own events, so a shared transaction keeps each command's actor.
ALTER TABLE linkflow_events ADD COLUMN workspace_id uuid;

UPDATE linkflow_events
SET workspace_id = (convert_from(state, 'UTF8')::jsonb ->> 'workspace_id')::uuid
WHERE topic NOT LIKE 'domain.user:%' AND topic NOT LIKE 'domain.token_family:%'
    AND convert_from(state, 'UTF8')::jsonb ? 'workspace_id';

-- The workspace's log page: WHERE workspace_id = $1 AND notification_id > $2 ORDER BY
-- notification_id LIMIT n is one index range scan.
CREATE INDEX linkflow_events_workspace_position
    ON linkflow_events (workspace_id, notification_id)
    WHERE workspace_id IS NOT NULL;

DROP FUNCTION IF EXISTS linkflow_append_events(uuid[], bigint[], text[], bytea[], uuid[], bigint[]);
CREATE OR REPLACE FUNCTION linkflow_append_events(
    ids uuid[], versions bigint[], topics text[], states bytea[],
    read_ids uuid[], read_versions bigint[],
    actors jsonb[], request_ids text[], workspace_ids uuid[]
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
        INSERT INTO linkflow_events (
            originator_id, originator_version, topic, state, actor, request_id, workspace_id
        )
        SELECT * FROM unnest(ids, versions, topics, states, actors, request_ids, workspace_ids)
        RETURNING notification_id;
END;
$$;
-- As migration 010: the read check can only be index probes, at any size of the log.
ALTER FUNCTION linkflow_append_events(
    uuid[], bigint[], text[], bytea[], uuid[], bigint[], jsonb[], text[], uuid[]
) SET enable_seqscan = off;
ALTER FUNCTION linkflow_append_events(
    uuid[], bigint[], text[], bytea[], uuid[], bigint[], jsonb[], text[], uuid[]
) SET enable_hashjoin = off;
ALTER FUNCTION linkflow_append_events(
    uuid[], bigint[], text[], bytea[], uuid[], bigint[], jsonb[], text[], uuid[]
) SET enable_mergejoin = off;
