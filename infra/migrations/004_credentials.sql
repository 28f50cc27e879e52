-- Credential metadata for the API's lists (written only by the projector; never the data, which
-- stays sealed in the event store). Disposable like every rm_* table.
CREATE TABLE rm_credentials (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL,
    name          text NOT NULL,
    type          text NOT NULL,
    fields        jsonb NOT NULL,
    deleted       boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    event_version int NOT NULL
);
CREATE INDEX rm_credentials_ws ON rm_credentials (workspace_id, name);
