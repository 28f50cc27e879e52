-- The audit hash chain (issue 15, tamper evidence), written only by the `audit` consumer
-- (engine/audit_chain.py); `linkflow audit verify` recomputes it from linkflow_events and compares.
--   audit_chain        one row per event of the log: its workspace's chain hash after it
--                      (SHA-256(previous hash || canonical bytes), docs/audit.md). Events whose
--                      state names no workspace chain under the nil UUID.
--   audit_checkpoints  Ed25519 signatures of a workspace's chain head (docs/audit.md says what
--                      is signed), at least every LINKFLOW_AUDIT_CHECKPOINT_S while it moves.
--   audit_keys         the PUBLIC keys checkpoints were signed with, old ones kept after a
--                      rotation so older checkpoints still verify. Never a private key.
CREATE TABLE audit_chain (
    position     bigint PRIMARY KEY,
    workspace_id uuid NOT NULL,
    hash         bytea NOT NULL
);
CREATE INDEX audit_chain_ws ON audit_chain (workspace_id, position);

CREATE TABLE audit_checkpoints (
    workspace_id uuid NOT NULL,
    position     bigint NOT NULL,
    chain_hash   bytea NOT NULL,
    signed_at    timestamptz NOT NULL,
    key_id       text NOT NULL,
    signature    bytea NOT NULL,
    PRIMARY KEY (workspace_id, position)
);

CREATE TABLE audit_keys (
    key_id     text PRIMARY KEY,
    algorithm  text NOT NULL DEFAULT 'ed25519',
    public_key bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
