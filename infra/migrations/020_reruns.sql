-- Re-runs (issue 16, item 5; domain/rerun.py, commands/reruns.py).
-- rm_executions.rerun_of: the execution a re-run re-runs (ExecutionStarted.rerun_of; NULL for
--   the others), shown in reads and list items; indexed to list an execution's re-runs.
-- rm_node_runs.reused: the node run's output was kept from the original (NodeReused), not run.
-- Written by the projector (projections/execution_rows.py); disposable like every read model.
ALTER TABLE rm_executions ADD COLUMN rerun_of uuid;
CREATE INDEX rm_executions_rerun_of ON rm_executions (workspace_id, rerun_of)
    WHERE rerun_of IS NOT NULL;
ALTER TABLE rm_node_runs ADD COLUMN reused boolean NOT NULL DEFAULT false;
