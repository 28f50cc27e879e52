-- Cron schedules of active workflows (owner: engine.schedules, consumer position `schedules`).
-- `version` is the workflow aggregate's version of the last event applied (the guard against
-- applying an older event over a newer one); `next_due` is the first due time not yet started.
CREATE TABLE engine_schedules (
    workflow_id      uuid PRIMARY KEY,
    workspace_id     uuid NOT NULL,
    version          int NOT NULL,
    workflow_version int NOT NULL,
    cron             text NOT NULL,
    timezone         text NOT NULL,
    catch_up         text NOT NULL,
    next_due         timestamptz,
    active           boolean NOT NULL,
    last_due         timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX engine_schedules_due ON engine_schedules (next_due) WHERE active;
