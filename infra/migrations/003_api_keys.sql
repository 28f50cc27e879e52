-- Read model of a workspace's API keys (metadata only: the key's secret exists nowhere).
CREATE TABLE IF NOT EXISTS rm_api_keys (
    id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL,
    name text NOT NULL,
    role text NOT NULL,
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS rm_api_keys_workspace ON rm_api_keys (workspace_id, created_at DESC);
