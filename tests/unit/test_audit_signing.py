"""Checkpoint messages and Ed25519 signatures (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from domain.audit_signing import (
    SigningKey,
    b64,
    checkpoint_message,
    key_id_of,
    unb64,
    verify_signature,
)

WS = "0d9e4c1a-6b1f-4c55-9a51-2b7f1c0e8a11"
AT = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)


def test_the_message_is_the_canonical_json_of_the_checkpoint() -> None:
    message = checkpoint_message(WS, 42, bytes([1]) * 32, AT)
    assert message == (
        b'{"chain_hash":"' + b"01" * 32 + b'","position":42,'
        b'"signed_at":"2026-01-02T03:04:05.000006Z","workspace_id":"' + WS.encode() + b'"}'
    )


def test_signed_at_is_written_in_utc_whatever_the_zone() -> None:
    local = AT.astimezone(timezone(timedelta(hours=2)))
    assert checkpoint_message(WS, 1, bytes(32), local) == checkpoint_message(WS, 1, bytes(32), AT)


def test_a_signature_verifies_with_its_key_and_not_with_another() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    message = checkpoint_message(WS, 1, bytes(32), AT)
    signature = key.sign(message)
    assert verify_signature(key.public_key, message, signature)
    assert not verify_signature(other.public_key, message, signature)
    assert not verify_signature(
        key.public_key, message.replace(b'"position":1', b'"position":2'), signature
    )


def test_a_key_round_trips_through_its_private_bytes_with_the_same_id() -> None:
    key = SigningKey.generate()
    again = SigningKey.from_private_bytes(key.private_bytes())
    assert again.public_key == key.public_key and again.key_id == key.key_id == key_id_of(
        key.public_key
    )
    assert "private" not in repr(key) and b64(key.private_bytes()) not in repr(key)


def test_unb64_refuses_malformed_or_wrong_length_input() -> None:
    assert unb64(b64(bytes(32)), 32) == bytes(32)
    with pytest.raises(ValueError):
        unb64("not base64!!")
    with pytest.raises(ValueError):
        unb64(b64(bytes(31)), 32)
