"""The checkpoint signing key and the table of public keys (`audit_keys`, migration 018).

The private key comes from `LINKFLOW_AUDIT_SIGNING_KEY` (base64 of the 32 raw bytes), else from
the local key file (`LINKFLOW_AUDIT_KEY_FILE`, default `~/.local/share/linkflow/
audit-signing.key`), which is generated on first use (development) and readable by its owner
only. The private key never reaches an event, a log line, a table or an API answer; only its
public half is stored, and kept after a rotation so older checkpoints still verify.

Imported by `engine/` (the signer), `gateways/` (the CLI and the keys route).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from domain.audit_signing import ALGORITHM, SigningKey, b64, unb64
from infra.db import DictConnection
from infra.settings import Settings


class KeyConflict(RuntimeError):
    """Another public key is already registered under this key id."""


def default_key_file() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "linkflow" / "audit-signing.key"


def key_file(settings: Settings) -> Path:
    return Path(settings.audit_key_file) if settings.audit_key_file else default_key_file()


def load_signing_key(settings: Settings) -> SigningKey:
    """The configured key, else the local key file's, generating the file when missing."""
    if settings.audit_signing_key:
        raw = unb64(settings.audit_signing_key, 32)
        return SigningKey.from_private_bytes(raw, settings.audit_key_id)
    path = key_file(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = SigningKey.generate()
        try:  # O_EXCL: of two processes starting at once, one writes and both read its key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(b64(fresh.private_bytes()) + "\n")
    raw = unb64(path.read_text(), 32)
    return SigningKey.from_private_bytes(raw, settings.audit_key_id)


async def register_key(conn: DictConnection, key: SigningKey) -> None:
    """List the key's public half (once); KeyConflict if its id names another key."""
    await conn.execute(
        "INSERT INTO audit_keys (key_id, algorithm, public_key) VALUES (%s, %s, %s)"
        " ON CONFLICT (key_id) DO NOTHING",
        (key.key_id, ALGORITHM, key.public_key),
    )
    cur = await conn.execute("SELECT public_key FROM audit_keys WHERE key_id = %s", (key.key_id,))
    row = await cur.fetchone()
    if row is None or bytes(row["public_key"]) != key.public_key:
        raise KeyConflict(f"audit key id {key.key_id!r} is registered with another public key")


async def list_keys(conn: DictConnection) -> list[dict[str, Any]]:
    """Every public key that signed or signs checkpoints, oldest first."""
    cur = await conn.execute(
        "SELECT key_id, algorithm, public_key, created_at FROM audit_keys"
        " ORDER BY created_at, key_id"
    )
    return [
        {
            "key_id": row["key_id"],
            "algorithm": row["algorithm"],
            "public_key": b64(bytes(row["public_key"])),
            "created_at": row["created_at"].isoformat(),
        }
        for row in await cur.fetchall()
    ]
