"""Signed checkpoints of the audit chain: the exact message an Ed25519 key signs, key ids, and
signing and checking (`cryptography`'s Ed25519). The message is documented byte-exact in
docs/audit.md.

Message: the UTF-8 canonical JSON (sorted keys, no whitespace) of
`{"chain_hash": <hex>, "position": <int>, "signed_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ",
"workspace_id": <uuid text>}`. Keys and signatures travel as standard base64.

Pure (no I/O, no clock: the time is an argument). Imported by `engine/` (the signer),
`gateways/` (the CLI, the routes) and `infra/` (key storage).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from domain.audit_chain import canonical_json

ALGORITHM = "ed25519"


def signed_at_text(moment: datetime) -> str:
    """A checkpoint's time as the message holds it: UTC, microseconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def checkpoint_message(
    workspace_id: str, position: int, chain_hash: bytes, signed_at: datetime
) -> bytes:
    return canonical_json(
        {
            "chain_hash": chain_hash.hex(),
            "position": position,
            "signed_at": signed_at_text(signed_at),
            "workspace_id": workspace_id,
        }
    ).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, size: int | None = None) -> bytes:
    """Standard base64 to bytes; ValueError when malformed or not `size` bytes long."""
    try:
        data = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64: {exc}") from exc
    if size is not None and len(data) != size:
        raise ValueError(f"must be {size} bytes, got {len(data)}")
    return data


def key_id_of(public_key: bytes) -> str:
    """The default key id: `ed25519-` and the first 16 hex digits of SHA-256(public key)."""
    return f"{ALGORITHM}-{hashlib.sha256(public_key).hexdigest()[:16]}"


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key with its public half and key id. Never logged or shown."""

    private: Ed25519PrivateKey
    public_key: bytes
    key_id: str

    @classmethod
    def from_private_bytes(cls, raw: bytes, key_id: str | None = None) -> SigningKey:
        private = Ed25519PrivateKey.from_private_bytes(raw)
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private, public, key_id or key_id_of(public))

    @classmethod
    def generate(cls, key_id: str | None = None) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private, public, key_id or key_id_of(public))

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (for the local key file only)."""
        return self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature of `message`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
