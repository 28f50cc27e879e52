-- The append's read check (migration 009) probes the primary key, whatever the table's size.
-- plpgsql caches a statement's plan; after five calls PostgreSQL may keep a generic plan made
-- while linkflow_events was nearly empty (a hash semi-join over a sequential scan), and nothing
-- replans it unless the table is analyzed, so every append of that session then hashed the
-- whole log (seen under load: two backends at a third of a core each, 36 ms per append at 200k
-- events). With sequential scans, hash and merge joins off inside this function, the check can
-- only be a nested loop over index probes, at any size. The insert has nothing to scan.
ALTER FUNCTION linkflow_append_events(uuid[], bigint[], text[], bytea[], uuid[], bigint[])
    SET enable_seqscan = off;
ALTER FUNCTION linkflow_append_events(uuid[], bigint[], text[], bytea[], uuid[], bigint[])
    SET enable_hashjoin = off;
ALTER FUNCTION linkflow_append_events(uuid[], bigint[], text[], bytea[], uuid[], bigint[])
    SET enable_mergejoin = off;
