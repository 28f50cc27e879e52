"""Authenticated encryption of secrets at rest (AES-256-GCM from `cryptography`) under the key
derived from `LINKFLOW_SECRET_KEY`, and keyed derivations of other secrets from it.

A sealed value is the text ``v1.<base64url(nonce ‖ ciphertext ‖ tag)>``; the associated data
binds it to its owner (e.g. the credential id), so a ciphertext moved elsewhere does not open.
Everything may import this module; only the worker (credentials for the node it runs) and the
webhook gateway (a trigger's own auth secret) open credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1"
_NONCE_BYTES = 12


class SealedValueInvalid(ValueError):
    """A sealed value that is malformed, tampered with, or sealed under another key or owner."""


def _derive(secret_key: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=b"linkflow", info=purpose).derive(
        secret_key.encode()
    )


class SecretBox:
    """Seals and opens JSON values with AES-256-GCM under a key derived from the secret key."""

    def __init__(self, secret_key: str) -> None:
        self._aead = AESGCM(_derive(secret_key, b"credentials-aes-gcm"))
        self._signing_root = _derive(secret_key, b"callback-signing")

    def seal(self, value: Any, associated: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        plaintext = json.dumps(value, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, plaintext, associated.encode())
        return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, associated: str) -> Any:
        version, _, body = sealed.partition(".")
        if version != _VERSION or not body:
            raise SealedValueInvalid("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            plaintext = self._aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], associated.encode()
            )
        except (InvalidTag, ValueError) as exc:
            raise SealedValueInvalid("the sealed value does not open under this key") from exc
        return json.loads(plaintext)

    def signing_secret(self, workspace_id: str) -> str:
        """The workspace's callback signing secret: derived, never stored."""
        digest = hmac.new(self._signing_root, workspace_id.encode(), hashlib.sha256).hexdigest()
        return f"lfsig_{digest}"
