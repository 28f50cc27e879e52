-- Positions of the relay and of every event consumer (notification ids of linkflow_events).
CREATE TABLE consumer_positions (
    consumer   text PRIMARY KEY,
    position   bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Visibility read models (written only by the projector; disposable, rebuilt from the log).
CREATE TABLE rm_workflows (
    id             uuid PRIMARY KEY,
    workspace_id   uuid NOT NULL,
    name           text NOT NULL,
    latest_version int NOT NULL,
    active_version int,
    archived       boolean NOT NULL DEFAULT false,
    trigger_type   text NOT NULL DEFAULT 'manual',
    created_by     text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    event_version  int NOT NULL
);
CREATE INDEX rm_workflows_ws ON rm_workflows (workspace_id, created_at DESC, id DESC);

CREATE TABLE rm_workflow_versions (
    workflow_id  uuid NOT NULL,
    version      int NOT NULL,
    workspace_id uuid NOT NULL,
    name         text NOT NULL,
    definition   jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

CREATE TABLE rm_executions (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL,
    workflow_id   uuid NOT NULL,
    version       int NOT NULL,
    status        text NOT NULL,
    trigger       text NOT NULL,
    input         jsonb,
    output        jsonb,
    error         jsonb,
    started_at    timestamptz NOT NULL,
    closed_at     timestamptz,
    event_version int NOT NULL
);
CREATE INDEX rm_executions_ws ON rm_executions (workspace_id, started_at DESC, id DESC);
CREATE INDEX rm_executions_ws_status ON rm_executions (workspace_id, status, started_at DESC, id DESC);
CREATE INDEX rm_executions_ws_wf ON rm_executions (workspace_id, workflow_id, started_at DESC, id DESC);

CREATE TABLE rm_node_runs (
    execution_id uuid NOT NULL,
    node_id      text NOT NULL,
    workspace_id uuid NOT NULL,
    type         text NOT NULL,
    status       text NOT NULL,
    attempts     int NOT NULL DEFAULT 0,
    started_at   timestamptz,
    closed_at    timestamptz,
    error        jsonb,
    output       jsonb,
    PRIMARY KEY (execution_id, node_id)
);

-- Engine state kept by the matching and timers consumers.
CREATE TABLE engine_tasks (
    task_id      text PRIMARY KEY,
    execution_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    queue        text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX engine_tasks_execution ON engine_tasks (execution_id);

CREATE TABLE engine_timers (
    timer_id     text PRIMARY KEY,
    execution_id uuid NOT NULL,
    workspace_id uuid NOT NULL,
    kind         text NOT NULL,
    fire_at      timestamptz NOT NULL
);
CREATE INDEX engine_timers_due ON engine_timers (fire_at);
CREATE INDEX engine_timers_execution ON engine_timers (execution_id);
