-- Callback deliveries kept by the callbacks consumer: one row per execution started with a
-- callback URL; due (next_attempt_at) once the execution closed (result set), until it is
-- delivered or abandoned. Derived from the Execution events, like engine_timers.
CREATE TABLE engine_callbacks (
    execution_id    uuid PRIMARY KEY,
    workspace_id    uuid NOT NULL,
    workflow_id     uuid NOT NULL,
    url             text NOT NULL,
    result          jsonb,
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    delivered_at    timestamptz,
    abandoned_at    timestamptz
);
CREATE INDEX engine_callbacks_due ON engine_callbacks (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;

-- The execution detail's `callback: {url, status, attempts}` (projector).
ALTER TABLE rm_executions ADD COLUMN callback jsonb;
