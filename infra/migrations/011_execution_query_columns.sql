-- Fields of the executions filter language (`q` of GET …/executions, projections/query_language.py).
-- workflow_name: the name in the definition the execution runs (the projector copies it from
--   ExecutionStarted; rows projected before this migration take it from their version's row).
-- duration_ms, failed_node, error_code: derived by PostgreSQL from what the projector already
--   writes, so a rebuild (`linkflow rebuild-read-models`) recomputes them too:
--   duration_ms = closed_at - started_at in whole milliseconds (NULL while running);
--   error_code = the closed execution's error.type (failed, canceled, timed_out);
--   failed_node = error.node_id: the node whose failure failed the execution.
ALTER TABLE rm_executions
    ADD COLUMN workflow_name text,
    ADD COLUMN duration_ms bigint
        GENERATED ALWAYS AS (floor(extract(epoch FROM closed_at - started_at) * 1000)::bigint) STORED,
    ADD COLUMN error_code text GENERATED ALWAYS AS (error ->> 'type') STORED,
    ADD COLUMN failed_node text GENERATED ALWAYS AS (error ->> 'node_id') STORED;

UPDATE rm_executions e SET workflow_name = v.name
  FROM rm_workflow_versions v
 WHERE v.workflow_id = e.workflow_id AND v.version = e.version;

-- The common filters besides status, workflow_id and started_at (001's indexes): a workflow by
-- name, and failures by error code or node (partial: only executions with an error have one).
CREATE INDEX rm_executions_ws_name
    ON rm_executions (workspace_id, workflow_name, started_at DESC, id DESC);
CREATE INDEX rm_executions_ws_error_code
    ON rm_executions (workspace_id, error_code, started_at DESC, id DESC)
    WHERE error_code IS NOT NULL;
CREATE INDEX rm_executions_ws_failed_node
    ON rm_executions (workspace_id, failed_node, started_at DESC, id DESC)
    WHERE failed_node IS NOT NULL;
