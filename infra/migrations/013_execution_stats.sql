-- Execution statistics (issue 14, item 4; queried by projections/stats.py): rollups of
-- rm_executions that PostgreSQL keeps equal to what the rows say, so that counts and
-- time-bucketed statistics cost what the number of buckets costs, not the number of executions.
--
-- rm_execution_stats: one row per (workspace, grain, workflow, bucket, status):
--   grain       1 minute, 1 hour or 1 day; bucket = date_bin(grain, started_at, 2001-01-01 UTC):
--               buckets are aligned in UTC;
--   workflow_id the nil UUID for the whole workspace (grains minute, hour and day), or the
--               execution's workflow (grains hour and day), so that a workspace-wide query
--               reads one row per bucket and status, not one per workflow. (Per workflow and
--               minute, the rollup would hold about as many rows as the executions themselves.)
--   status      the executions' status, or '*' for all of them: a bucket's durations in one
--               histogram, read without merging one per status;
--   executions  how many executions started in the bucket have that status (never 0: a row
--               whose count falls to 0 is deleted, as a rebuild would never have made it);
--   durations   the histogram of their duration_ms (closed executions; NULL while none is):
--               durations[b] = how many fall in bin b. The array runs from its lowest to its
--               highest bin holding any (its lower bound is that bin's number), 0 in between;
--   percentiles on '*' rows, the bins of the p50, p95 and p99 of `durations` (nearest rank:
--               the first bin where the running count reaches ceil(p % of the count)), so that a
--               bucket's percentiles are read, not computed (NULL on other rows, or while none
--               is closed).
-- Every execution is counted in ten rows (five scopes and grains, its status and '*').
-- Duration bins (rm_stats_duration_bin; projections/stats.py computes the same, the tests check
-- it): bin b holds the durations bound[b] <= d < bound[b + 1], where bound[0] = 0 and
-- bound[k + 1] = bound[k] + max(1, bound[k] / 20) in integers, up to the first bound >= 10^12 ms
-- (31 years; the last bin is open). Below 20 ms a bin is one millisecond; above, at most 5 %
-- wide, so its middle is within 2.5 % of every duration in it. A negative duration counts as 0;
-- NULL (running) has no bin.
--
-- Maintenance, exact under any replay or rebuild because it follows the rows themselves:
-- AFTER ROW triggers on rm_executions record each change as pending rows (a temporary table
-- of the session) (+1 for an inserted
-- row, -1 for a deleted one; an UPDATE that changes workspace, workflow, start, status or
-- duration gives -1 for the old row and +1 for the new); at commit a deferred trigger folds
-- them into the rollups with one set-based upsert (rm_execution_stats_flush), once per
-- transaction. Why not a statement-level trigger with transition tables: the projector writes
-- rm_executions with executemany, one statement per row, so it would run once per row too, and
-- each run would upsert the rollup rows again; deferring to commit makes the rollup write once
-- per projector batch, however many executions the batch holds.
-- A rebuild (TRUNCATE of every read model, then the projector from position 0) rebuilds them.

DO $migration$
DECLARE
    bounds bigint[];
BEGIN
    WITH RECURSIVE bound (lo) AS (
        SELECT 0::bigint
        UNION ALL
        SELECT lo + greatest(1, lo / 20) FROM bound WHERE lo < 1000000000000
    )
    SELECT array_agg(lo ORDER BY lo) INTO bounds FROM bound;
    EXECUTE format(
        $function$
        CREATE FUNCTION rm_stats_duration_bin(duration_ms bigint) RETURNS int
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS $body$
                SELECT width_bucket(CASE WHEN duration_ms < 0 THEN 0 ELSE duration_ms END,
                                    %L::bigint[]) - 1
            $body$
        $function$,
        bounds
    );
END
$migration$;

CREATE TABLE rm_execution_stats (
    workspace_id uuid NOT NULL,
    grain        interval NOT NULL,
    workflow_id  uuid NOT NULL,
    bucket       timestamptz NOT NULL,
    status       text NOT NULL,
    executions   bigint NOT NULL,
    durations    int[],
    percentiles  int[],
    PRIMARY KEY (workspace_id, grain, workflow_id, bucket, status)
) WITH (fillfactor = 80);  -- room for HOT updates: a bucket's rows change with each execution

-- Most rows are the workspace's minutes, most hours and days are per workflow: without the
-- statistics of the two together the planner takes an hour query for a large share of the
-- table and scans it.
CREATE STATISTICS rm_execution_stats_scope (mcv) ON grain, workflow_id FROM rm_execution_stats;


-- `histogram` plus `delta` (which may subtract; NULL adds nothing), bin by bin: the result runs from its lowest to
-- its highest bin holding any, 0 in the bins between that hold none (no NULLs: an element is
-- then found in constant time); NULL when no bin holds any.
CREATE FUNCTION rm_stats_histogram_add(histogram int[], delta int[]) RETURNS int[]
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    lo int := array_lower(histogram, 1);
    hi int := array_upper(histogram, 1);
    subtracted boolean := false;
    trimmed int[];
BEGIN
    IF delta IS NULL THEN
        RETURN histogram;
    END IF;
    IF histogram IS NULL THEN
        histogram := array_fill(0, ARRAY[array_length(delta, 1)], ARRAY[array_lower(delta, 1)]);
        lo := array_lower(delta, 1);
        hi := array_upper(delta, 1);
    END IF;
    IF array_lower(delta, 1) < lo THEN
        histogram := array_fill(0, ARRAY[lo - array_lower(delta, 1)], ARRAY[array_lower(delta, 1)])
                     || histogram;
        lo := array_lower(delta, 1);
    END IF;
    IF array_upper(delta, 1) > hi THEN
        histogram := histogram || array_fill(0, ARRAY[array_upper(delta, 1) - hi]);
        hi := array_upper(delta, 1);
    END IF;
    FOR i IN array_lower(delta, 1) .. array_upper(delta, 1) LOOP
        IF delta[i] <> 0 THEN
            histogram[i] := histogram[i] + delta[i];
            subtracted := subtracted OR delta[i] < 0;
        END IF;
    END LOOP;
    IF NOT subtracted THEN
        RETURN histogram;
    END IF;
    WHILE lo <= hi AND histogram[lo] = 0 LOOP
        lo := lo + 1;
    END LOOP;
    WHILE hi >= lo AND histogram[hi] = 0 LOOP
        hi := hi - 1;
    END LOOP;
    IF lo > hi THEN
        RETURN NULL;
    END IF;
    trimmed := array_fill(0, ARRAY[hi - lo + 1], ARRAY[lo]);
    FOR i IN lo .. hi LOOP
        trimmed[i] := histogram[i];
    END LOOP;
    RETURN trimmed;
END
$$;

-- The histogram holding counts[i] in bin bins[i], its bins from lo to hi (the lowest and highest
-- of `bins`; NULL when there are none).
CREATE FUNCTION rm_stats_histogram(lo int, hi int, bins int[], counts bigint[]) RETURNS int[]
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    histogram int[];
BEGIN
    IF lo IS NULL THEN
        RETURN NULL;
    END IF;
    histogram := array_fill(0, ARRAY[hi - lo + 1], ARRAY[lo]);
    FOR i IN 1 .. cardinality(bins) LOOP
        histogram[bins[i]] := counts[i];
    END LOOP;
    RETURN histogram;
END
$$;

-- The bins of the p50, p95 and p99 of a histogram (nearest rank; NULL when it is empty).
CREATE FUNCTION rm_stats_percentile_bins(histogram int[]) RETURNS int[]
    LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    total bigint := (SELECT sum(c) FROM unnest(histogram) c);
    ranks bigint[];
    found int[] := '{}';
    seen bigint := 0;
    bin int := array_lower(histogram, 1);
    c int;
BEGIN
    IF coalesce(total, 0) = 0 THEN
        RETURN NULL;
    END IF;
    ranks := ARRAY[(50 * total + 99) / 100, (95 * total + 99) / 100, (99 * total + 99) / 100];
    FOREACH c IN ARRAY histogram LOOP
        seen := seen + c;
        WHILE cardinality(found) < 3 AND seen >= ranks[cardinality(found) + 1] LOOP
            found := found || bin;
        END LOOP;
        EXIT WHEN cardinality(found) = 3;
        bin := bin + 1;
    END LOOP;
    RETURN found;
END
$$;

-- What the triggers saw in this transaction and the rollups do not include yet: one row per
-- execution row inserted (+1), deleted (-1) or changed (-1 the old, +1 the new). A temporary
-- table of each session that writes rm_executions, created by the first change it makes
-- (`rm_execution_stats_pending_ready`), emptied by `rm_execution_stats_flush` and, at commit,
-- by ON COMMIT DELETE ROWS — a truncation of the session's own file, so that no dead row ever
-- stays behind. (A shared table emptied with DELETE kept every dead row until a VACUUM: with
-- autovacuum off, each flush scanned all of them — 680 ms a commit after a bulk load of
-- 1,000,000 executions.)
CREATE FUNCTION rm_execution_stats_pending_ready() RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.rm_execution_stats_pending') IS NOT NULL THEN
        RETURN;
    END IF;
    CREATE TEMPORARY TABLE rm_execution_stats_pending (
        workspace_id uuid NOT NULL,
        workflow_id  uuid NOT NULL,
        started_at   timestamptz NOT NULL,
        status       text NOT NULL,
        duration_ms  bigint,
        sign         int NOT NULL,
        flush        boolean NOT NULL  -- the transaction's first: it queues the flush at commit
    ) ON COMMIT DELETE ROWS;
    -- Fires once per transaction, at commit: only the transaction's first pending row asks.
    CREATE CONSTRAINT TRIGGER rm_execution_stats_pending_flush
        AFTER INSERT ON pg_temp.rm_execution_stats_pending
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW WHEN (NEW.flush)
        EXECUTE FUNCTION rm_execution_stats_flush_at_commit();
END
$$;

-- Fold the pending rows into the rollups, set-based, once per transaction: each rollup row a
-- pending row belongs to (its ten) gets the sum of the contributions in one upsert; a row whose
-- count falls to 0 is deleted.
CREATE FUNCTION rm_execution_stats_flush() RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    workspaces uuid[];
    grains interval[];
    workflows uuid[];
    buckets timestamptz[];
    statuses text[];
BEGIN
    PERFORM set_config('linkflow.execution_stats_queued', '', true);
    WITH keyed AS (
        SELECT p.workspace_id, g.grain, g.workflow_id,
               date_bin(g.grain, p.started_at, TIMESTAMPTZ '2001-01-01 00:00:00+00') AS bucket,
               s.status, rm_stats_duration_bin(p.duration_ms) AS bin, p.sign
          FROM rm_execution_stats_pending p,
               LATERAL (VALUES (INTERVAL '1 minute', '00000000-0000-0000-0000-000000000000'::uuid),
                               (INTERVAL '1 hour', '00000000-0000-0000-0000-000000000000'::uuid),
                               (INTERVAL '1 day', '00000000-0000-0000-0000-000000000000'::uuid),
                               (INTERVAL '1 hour', p.workflow_id),
                               (INTERVAL '1 day', p.workflow_id)) g (grain, workflow_id),
               LATERAL (VALUES (p.status), ('*')) s (status)
    ), binned AS (
        SELECT workspace_id, grain, workflow_id, bucket, status, bin, sum(sign) AS n
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

CREATE FUNCTION rm_execution_stats_flush_at_commit() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rm_execution_stats_flush();
    RETURN NULL;
END
$$;

-- Each change of rm_executions as pending rows: the part that runs once per row, kept small.
CREATE FUNCTION rm_executions_to_stats() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    first boolean := current_setting('linkflow.execution_stats_queued', true)
                     IS DISTINCT FROM 'on';
BEGIN
    IF first THEN
        PERFORM set_config('linkflow.execution_stats_queued', 'on', true);
        PERFORM rm_execution_stats_pending_ready();
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rm_execution_stats_pending VALUES (NEW.workspace_id, NEW.workflow_id,
            NEW.started_at, NEW.status, NEW.duration_ms, 1, first);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO rm_execution_stats_pending VALUES (OLD.workspace_id, OLD.workflow_id,
            OLD.started_at, OLD.status, OLD.duration_ms, -1, first);
    ELSE
        INSERT INTO rm_execution_stats_pending VALUES
            (OLD.workspace_id, OLD.workflow_id, OLD.started_at, OLD.status, OLD.duration_ms, -1,
             first),
            (NEW.workspace_id, NEW.workflow_id, NEW.started_at, NEW.status, NEW.duration_ms, 1,
             false);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER rm_executions_stats_insert_delete
    AFTER INSERT OR DELETE ON rm_executions
    FOR EACH ROW EXECUTE FUNCTION rm_executions_to_stats();

-- Most updates (callback status, event_version, output) change nothing the rollups count.
CREATE TRIGGER rm_executions_stats_update
    AFTER UPDATE ON rm_executions
    FOR EACH ROW
    WHEN (OLD.workspace_id IS DISTINCT FROM NEW.workspace_id
          OR OLD.workflow_id IS DISTINCT FROM NEW.workflow_id
          OR OLD.started_at IS DISTINCT FROM NEW.started_at
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.duration_ms IS DISTINCT FROM NEW.duration_ms)
    EXECUTE FUNCTION rm_executions_to_stats();

-- The rows projected before this migration.
SELECT rm_execution_stats_pending_ready();
INSERT INTO rm_execution_stats_pending
SELECT workspace_id, workflow_id, started_at, status, duration_ms, 1, false FROM rm_executions;
SELECT rm_execution_stats_flush();
