"""Unit tests for gateways.http.tokens: JWT access tokens (HS256 pinned, claims checked)."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from gateways.http.errors import ApiError
from gateways.http.tokens import decode_access_token, issue_access_token
from infra.settings import Settings

SETTINGS = Settings(jwt_secret="unit-test-secret-" + "0123456789abcdef" * 3, jwt_issuer="linkflow")


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "sub": str(uuid.uuid4()),
        "iss": SETTINGS.jwt_issuer,
        "iat": now,
        "exp": now + 60,
        "typ": "access",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def refused(token: str) -> ApiError:
    with pytest.raises(ApiError) as info:
        decode_access_token(SETTINGS, token)
    assert info.value.status == 401
    assert info.value.code == "invalid_token"
    return info.value


def test_round_trip() -> None:
    user = uuid.uuid4()
    token, expires_in = issue_access_token(SETTINGS, user)
    assert expires_in == SETTINGS.access_token_ttl_s
    assert decode_access_token(SETTINGS, token) == user


def test_expired_token_refused() -> None:
    token, ttl = issue_access_token(SETTINGS, uuid.uuid4(), now=time.time() - 2 * 900 - 10)
    assert ttl == 900
    refused(token)


def test_a_verified_token_is_still_refused_once_it_expires() -> None:
    """Verified tokens are remembered (so repeat requests skip the signature check), with their
    expiry: the remembered one is refused from its expiry on, like a fresh check would."""
    user = uuid.uuid4()
    issued = time.time()
    token, ttl = issue_access_token(SETTINGS, user, now=issued)
    expiry = int(issued) + ttl
    assert decode_access_token(SETTINGS, token, now=issued) == user
    assert decode_access_token(SETTINGS, token, now=expiry - 0.001) == user  # remembered
    with pytest.raises(ApiError) as info:
        decode_access_token(SETTINGS, token, now=expiry)
    assert info.value.code == "invalid_token"


@pytest.mark.parametrize("offset", [0, 60])
def test_a_fresh_check_refuses_a_token_from_its_expiry_on(offset: int) -> None:
    token, _ = issue_access_token(SETTINGS, uuid.uuid4())
    expiry = jwt.decode(token, options={"verify_signature": False})["exp"]
    with pytest.raises(ApiError) as info:
        decode_access_token(SETTINGS, token, now=expiry + offset)
    assert info.value.code == "invalid_token"


def test_a_token_is_refused_before_it_was_issued() -> None:
    issued = time.time()
    token, _ = issue_access_token(SETTINGS, uuid.uuid4(), now=issued)
    with pytest.raises(ApiError) as info:
        decode_access_token(SETTINGS, token, now=int(issued) - 1)
    assert info.value.code == "invalid_token"


def test_a_token_is_refused_before_its_not_before_time() -> None:
    user = uuid.uuid4()
    now = int(time.time())
    token = jwt.encode(claims(sub=str(user), nbf=now + 10), SETTINGS.jwt_secret)
    refused(token)
    assert decode_access_token(SETTINGS, token, now=now + 10) == user


def test_a_token_verified_under_one_secret_is_refused_under_another() -> None:
    token, _ = issue_access_token(SETTINGS, uuid.uuid4())
    decode_access_token(SETTINGS, token)
    other = Settings(jwt_secret="another-secret-" + "f" * 48, jwt_issuer="linkflow")
    with pytest.raises(ApiError):
        decode_access_token(other, token)


def test_algorithm_none_refused() -> None:
    token = jwt.encode(claims(), None, algorithm="none")
    refused(token)


def test_other_hmac_algorithm_refused() -> None:
    token = jwt.encode(claims(), SETTINGS.jwt_secret, algorithm="HS512")
    refused(token)


def test_tampered_signature_refused() -> None:
    token, _ = issue_access_token(SETTINGS, uuid.uuid4())
    head, body, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    refused(f"{head}.{body}.{flipped}")


def test_tampered_payload_refused() -> None:
    token, _ = issue_access_token(SETTINGS, uuid.uuid4())
    _, _, signature = token.split(".")
    forged = jwt.encode(claims(), "another-secret-0123456789abcdef-xyz", algorithm="HS256")
    head, body, _ = forged.split(".")
    refused(f"{head}.{body}.{signature}")


def test_wrong_secret_refused() -> None:
    refused(jwt.encode(claims(), "another-secret-0123456789abcdef-xyz", algorithm="HS256"))


def test_wrong_issuer_refused() -> None:
    refused(jwt.encode(claims(iss="someone-else"), SETTINGS.jwt_secret, algorithm="HS256"))


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "iss"])
def test_required_claims(missing: str) -> None:
    refused(jwt.encode(claims(**{missing: None}), SETTINGS.jwt_secret, algorithm="HS256"))


def test_refresh_type_refused_as_access() -> None:
    refused(jwt.encode(claims(typ="refresh"), SETTINGS.jwt_secret, algorithm="HS256"))


def test_subject_must_be_uuid() -> None:
    refused(jwt.encode(claims(sub="admin"), SETTINGS.jwt_secret, algorithm="HS256"))


def test_garbage_refused() -> None:
    refused("not-a-token")
    refused("")


def test_asymmetric_algorithm_confusion_refused() -> None:
    """An RS256 token (the classic confusion: verify it with the HMAC secret as if it were a
    public key) is refused because the algorithm is pinned."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(jwt.encode(claims(), key, algorithm="RS256"))


def test_a_short_jwt_secret_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        Settings(jwt_secret="too-short")
