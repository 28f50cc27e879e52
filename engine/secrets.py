"""Credentials for the node a worker runs: fill the secret markers of a task's config (placed by
`domain.expressions.render_task`, listed in the task's `secrets` paths) with the fields of the
workspace's credentials, opened with the `SecretBox`; and redact every value used from what the
node answers. Plaintext lives only in this worker, for this attempt: never logged, never in a
command. Imported by `engine.worker`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, quote_plus

from commands import lookups
from domain.credential import Credential
from domain.expressions import SECRET_MARKER, to_text
from engine.nodes.http_request import NodeError
from infra.crypto import SealedValueInvalid, SecretBox

REDACTED = "[redacted]"

# Reads the workspace's credential of a name (lookups.sealed_credential through the bus).
Lookup = Callable[[str], Awaitable[lookups.SealedCredential | None]]


def _credential_error(message: str) -> NodeError:
    return NodeError("credential_error", message, retryable=False)


def _markers(config: dict[str, Any], paths: list[list[str | int]]) -> list[tuple[Any, Any]]:
    """(container, key) of each marker the paths name; a path to no marker is ignored."""
    found = []
    for path in paths:
        parent: Any = config
        try:
            for key in path[:-1]:
                parent = parent[key]
            value = parent[path[-1]] if path else None
        except (KeyError, IndexError, TypeError):
            continue
        if isinstance(value, dict) and set(value) == {SECRET_MARKER}:
            found.append((parent, path[-1]))
    return found


async def open_credentials(
    names: set[str], lookup: Lookup, box: SecretBox
) -> dict[str, dict[str, Any]]:
    """The data of each named credential; a missing or unopenable one is a `credential_error`
    naming it (never its content)."""
    opened: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        sealed = await lookup(name)
        if sealed is None:
            raise _credential_error(f"credential {name!r} not found")
        try:
            data = box.open(sealed.sealed_data, Credential.sealing_context(sealed.id))
        except SealedValueInvalid:
            raise _credential_error(f"credential {name!r} cannot be decrypted") from None
        opened[name] = data if isinstance(data, dict) else {}
    return opened


def _fill(parts: list[Any], credentials: dict[str, dict[str, Any]], used: list[Any]) -> Any:
    values = []
    for part in parts:
        if isinstance(part, str):
            values.append(part)
            continue
        name, field = str(part.get("credential")), str(part.get("field"))
        data = credentials.get(name, {})
        if field not in data:
            raise _credential_error(f"credential {name!r} has no field {field!r}")
        used.append(data[field])
        values.append(data[field])
    if len(values) == 1 and not isinstance(parts[0], str):
        return values[0]  # a lone reference keeps its value's type
    return "".join(to_text(v) for v in values)


async def resolve(
    config: dict[str, Any], paths: list[list[str | int]], lookup: Lookup, box: SecretBox
) -> tuple[dict[str, Any], list[str]]:
    """The config with its markers filled in (the task's own config is not changed), and the
    secret texts to redact from the node's result."""
    if not paths:
        return config, []
    config = _copy(config)
    markers = _markers(config, paths)
    names = {
        str(part.get("credential"))
        for parent, key in markers
        for part in parent[key][SECRET_MARKER]
        if isinstance(part, dict)
    }
    credentials = await open_credentials(names, lookup, box)
    used: list[Any] = []
    for parent, key in markers:
        parent[key] = _fill(parent[key][SECRET_MARKER], credentials, used)
    return config, secret_texts(used)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def secret_texts(values: list[Any]) -> list[str]:
    """Every text form of the used values to look for: each value's text and its string leaves,
    also URL-encoded; longest first (so a secret containing another is redacted whole)."""
    texts: set[str] = set()

    def add(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                add(item)
        elif isinstance(value, list):
            for item in value:
                add(item)
        if not isinstance(value, bool) and value is not None:
            texts.add(to_text(value))

    for value in values:
        add(value)
    variants = {form for text in texts for form in (text, quote(text, safe=""), quote_plus(text))}
    return sorted((t for t in variants if t), key=len, reverse=True)


def redact(value: Any, secrets: list[str]) -> Any:
    """`value` with every occurrence of a secret in its strings (keys too) replaced."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value
