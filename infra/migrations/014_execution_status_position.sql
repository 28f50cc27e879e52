-- The live feed of status changes (GET …/executions/live, gateways/http/live.py): the log
-- position of the event that last set an execution's status (ExecutionStarted or the closing
-- event), written by the projector with the status. A feed resumed with Last-Event-ID reads the
-- rows whose status changed after that position, in that order. Rows projected before this
-- migration keep NULL: their last change precedes every position a feed ever sent, so a resume
-- never needs them (a rebuild of the read models fills them in).
ALTER TABLE rm_executions ADD COLUMN status_position bigint;

CREATE INDEX rm_executions_ws_status_position
    ON rm_executions (workspace_id, status_position)
    WHERE status_position IS NOT NULL;
