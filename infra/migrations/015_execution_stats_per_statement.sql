-- The rollups of migration 013 queued per statement, not per row (issue 14: the row triggers
-- cost the projector's transaction about 30 % more; projections.execution_rows now writes a
-- batch's execution rows in one statement per shape, so a statement trigger runs once per batch).
--
-- Each statement that inserts, updates or deletes rm_executions queues its changes as pending
-- rows (migration 013's temporary table) in one INSERT … SELECT over its transition tables:
-- +1 for each inserted row, -1 for each deleted one, and for an UPDATE -1 for each old row and
-- +1 for each new one unless the row kept its id and every column the rollups see (workspace,
-- workflow, start, status, duration) — so most updates (callback status, event_version, output)
-- queue nothing. That is exact for any statement: COPY and INSERT … ON CONFLICT DO UPDATE fire
-- the INSERT trigger with the rows inserted and the UPDATE trigger with the rows updated. The
-- flush at commit (rm_execution_stats_flush, once per transaction) is unchanged.

DROP TRIGGER rm_executions_stats_insert_delete ON rm_executions;
DROP TRIGGER rm_executions_stats_update ON rm_executions;
DROP FUNCTION rm_executions_to_stats();

-- Whether the transaction has queued nothing yet (then its first pending row asks for the
-- flush at commit); makes sure the session's pending table exists.
CREATE FUNCTION rm_execution_stats_first() RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('linkflow.execution_stats_queued', true) IS NOT DISTINCT FROM 'on' THEN
        RETURN false;
    END IF;
    PERFORM rm_execution_stats_pending_ready();
    RETURN true;
END
$$;

-- After a statement queued `queued` pending rows: once one is queued, the flush is asked for.
CREATE FUNCTION rm_execution_stats_queued(first boolean, queued bigint) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF first AND queued > 0 THEN
        PERFORM set_config('linkflow.execution_stats_queued', 'on', true);
    END IF;
END
$$;

-- The statement triggers' function: it queues its statement's changes in one INSERT … SELECT
-- over the transition tables (which only the trigger function itself can read; each trigger
-- declares the ones its branch reads), the first row of the transaction's first flagged.
CREATE FUNCTION rm_executions_changed_to_stats() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    first boolean := rm_execution_stats_first();
    queued bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rm_execution_stats_pending
        SELECT workspace_id, workflow_id, started_at, status, duration_ms, 1,
               first AND row_number() OVER () = 1
          FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO rm_execution_stats_pending
        SELECT workspace_id, workflow_id, started_at, status, duration_ms, -1,
               first AND row_number() OVER () = 1
          FROM old_rows;
    ELSE
        INSERT INTO rm_execution_stats_pending
        SELECT c.*, first AND row_number() OVER () = 1
          FROM (SELECT o.workspace_id, o.workflow_id, o.started_at, o.status, o.duration_ms, -1
                  FROM old_rows o
                 WHERE NOT EXISTS (
                       SELECT 1 FROM new_rows n
                        WHERE n.id = o.id
                          AND (n.workspace_id, n.workflow_id, n.started_at, n.status,
                               n.duration_ms)
                              IS NOT DISTINCT FROM
                              (o.workspace_id, o.workflow_id, o.started_at, o.status,
                               o.duration_ms))
                UNION ALL
                SELECT n.workspace_id, n.workflow_id, n.started_at, n.status, n.duration_ms, 1
                  FROM new_rows n
                 WHERE NOT EXISTS (
                       SELECT 1 FROM old_rows o
                        WHERE o.id = n.id
                          AND (n.workspace_id, n.workflow_id, n.started_at, n.status,
                               n.duration_ms)
                              IS NOT DISTINCT FROM
                              (o.workspace_id, o.workflow_id, o.started_at, o.status,
                               o.duration_ms))
               ) c;
    END IF;
    GET DIAGNOSTICS queued = ROW_COUNT;
    PERFORM rm_execution_stats_queued(first, queued);
    RETURN NULL;
END
$$;

CREATE TRIGGER rm_executions_stats_insert
    AFTER INSERT ON rm_executions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rm_executions_changed_to_stats();

CREATE TRIGGER rm_executions_stats_delete
    AFTER DELETE ON rm_executions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rm_executions_changed_to_stats();

CREATE TRIGGER rm_executions_stats_update
    AFTER UPDATE ON rm_executions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rm_executions_changed_to_stats();

-- The flush of migration 013, its pending rows first summed per (workspace, workflow, minute,
-- status, duration bin): a batch of executions started in the same minutes is a few such groups,
-- and only those are spread over the ten rollup rows each belongs to (a minute bucket lies in
-- one hour and one day: the buckets are aligned on the same origin). Before, each pending row
-- was spread, and binned, ten times: 2 ms of a 100-execution batch's commit.
CREATE OR REPLACE FUNCTION rm_execution_stats_flush() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    workspaces uuid[];
    grains interval[];
    workflows uuid[];
    buckets timestamptz[];
    statuses text[];
BEGIN
    PERFORM set_config('linkflow.execution_stats_queued', '', true);
    WITH summed AS (
        SELECT workspace_id, workflow_id,
               date_bin(INTERVAL '1 minute', started_at, TIMESTAMPTZ '2001-01-01 00:00:00+00')
                   AS minute,
               status, rm_stats_duration_bin(duration_ms) AS bin, sum(sign) AS n
          FROM rm_execution_stats_pending
         GROUP BY 1, 2, 3, 4, 5
    ), keyed AS (
        SELECT p.workspace_id, g.grain, g.workflow_id,
               date_bin(g.grain, p.minute, TIMESTAMPTZ '2001-01-01 00:00:00+00') AS bucket,
               s.status, p.bin, p.n
          FROM summed p,
               LATERAL (VALUES (INTERVAL '1 minute', '00000000-0000-0000-0000-000000000000'::uuid),
                               (INTERVAL '1 hour', '00000000-0000-0000-0000-000000000000'::uuid),
                               (INTERVAL '1 day', '00000000-0000-0000-0000-000000000000'::uuid),
                               (INTERVAL '1 hour', p.workflow_id),
                               (INTERVAL '1 day', p.workflow_id)) g (grain, workflow_id),
               LATERAL (VALUES (p.status), ('*')) s (status)
    ), binned AS (
        SELECT workspace_id, grain, workflow_id, bucket, status, bin, sum(n)::bigint AS n
          FROM keyed
         GROUP BY workspace_id, grain, workflow_id, bucket, status, bin
    ), deltas AS (
        SELECT workspace_id, grain, workflow_id, bucket, status, sum(n)::bigint AS n,
               rm_stats_histogram(min(bin) FILTER (WHERE n <> 0),
                                  max(bin) FILTER (WHERE n <> 0),
                                  array_agg(bin) FILTER (WHERE bin IS NOT NULL AND n <> 0),
                                  array_agg(n) FILTER (WHERE bin IS NOT NULL AND n <> 0))
                   AS durations
          FROM binned
         GROUP BY workspace_id, grain, workflow_id, bucket, status
        HAVING sum(n) <> 0 OR bool_or(bin IS NOT NULL AND n <> 0)
    ), upserted AS (
        INSERT INTO rm_execution_stats AS s
            (workspace_id, grain, workflow_id, bucket, status, executions, durations,
             percentiles)
        SELECT workspace_id, grain, workflow_id, bucket, status, n, durations,
               CASE WHEN status = '*' THEN rm_stats_percentile_bins(durations) END
          FROM deltas
         ORDER BY workspace_id, grain, workflow_id, bucket, status  -- one lock order for all
        ON CONFLICT (workspace_id, grain, workflow_id, bucket, status)
        DO UPDATE SET executions = s.executions + EXCLUDED.executions,
                      (durations, percentiles) = (
                          SELECT merged,
                                 CASE WHEN s.status <> '*' THEN NULL
                                      WHEN EXCLUDED.durations IS NULL THEN s.percentiles
                                      ELSE rm_stats_percentile_bins(merged) END
                            FROM rm_stats_histogram_add(s.durations, EXCLUDED.durations) merged)
        RETURNING s.workspace_id, s.grain, s.workflow_id, s.bucket, s.status, s.executions
    )
    SELECT array_agg(workspace_id), array_agg(grain), array_agg(workflow_id), array_agg(bucket),
           array_agg(status)
      INTO workspaces, grains, workflows, buckets, statuses
      FROM upserted
     WHERE executions = 0;
    IF workspaces IS NOT NULL THEN
        DELETE FROM rm_execution_stats s
         USING unnest(workspaces, grains, workflows, buckets, statuses)
               AS z (workspace_id, grain, workflow_id, bucket, status)
         WHERE s.workspace_id = z.workspace_id AND s.grain = z.grain
           AND s.workflow_id = z.workflow_id AND s.bucket = z.bucket AND s.status = z.status
           AND s.executions = 0;
    END IF;
    DELETE FROM rm_execution_stats_pending;
END
$$;
