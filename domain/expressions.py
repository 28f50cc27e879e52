"""`{{ … }}` templates evaluated with JMESPath (no eval, no user code).

Domain: pure (no I/O, no clock, no asyncio). Imported by domain.definition, domain.node_logic,
commands, engine and gateways.

The context an expression sees is ``{"trigger": …, "nodes": {<id>: {"output": …}}, "vars": …,
"execution": …}``. A string that is exactly one ``{{ expr }}`` evaluates to the expression's
value with its type; any other string has each ``{{ expr }}`` replaced by the value's text
(see :func:`to_text`).

Credentials are never in the context: ``{{ credentials.<name>.<field> }}`` (that form only) is
not evaluated here. :func:`render_task` turns a string that reads a credential into a *secret
marker* ``{"$secret": [<text>, {"credential": <name>, "field": <field>}, …]}`` (the other
expressions already rendered to text) and reports where the markers are; the worker fills them
in. :func:`render` refuses credential references.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError, LexerError, ParseError
from jmespath.functions import Functions
from jmespath.parser import ParsedResult

__all__ = [
    "CREDENTIALS",
    "SECRET_MARKER",
    "ExpressionError",
    "credential_paths",
    "render",
    "render_task",
    "expression_errors",
    "references",
    "has_expression",
    "string_paths",
    "to_text",
]

CREDENTIALS = "credentials"
SECRET_MARKER = "$secret"
_CREDENTIAL_FORM = "{{ credentials.<name>.<field> }}"

_OPEN = "{{"
_CLOSE = "}}"
_QUOTES = ("'", '"', "`")
# AST node types whose children are all evaluated against the same value as the node itself.
_SAME_CONTEXT = frozenset(
    {
        "function_expression",
        "multi_select_list",
        "multi_select_dict",
        "key_val_pair",
        "comparator",
        "or_expression",
        "and_expression",
        "not_expression",
        "flatten",
    }
)
# AST node types whose first child is evaluated against the node's value, the others not.
_FIRST_CHILD_CONTEXT = frozenset(
    {
        "subexpression",
        "index_expression",
        "projection",
        "value_projection",
        "filter_projection",
        "pipe",
    }
)


class ExpressionError(ValueError):
    """An expression that does not parse or cannot be evaluated against its context."""


class _Unbalanced(Exception):
    """Internal: a ``{{`` without its closing ``}}``."""


# A parsed template: literal text segments (str) and expressions (_Expr), in order.
class _Expr(str):
    """Internal marker type: the source of one ``{{ }}`` expression (already stripped)."""


@lru_cache(maxsize=4096)
def _segments(template: str) -> tuple[str, ...]:
    """Split a template into literal text and `_Expr` parts; raise `_Unbalanced`."""
    parts: list[str] = []
    pos = 0
    while True:
        start = template.find(_OPEN, pos)
        if start < 0:
            if pos < len(template):
                parts.append(template[pos:])
            return tuple(parts)
        if start > pos:
            parts.append(template[pos:start])
        end = _find_close(template, start + len(_OPEN))
        parts.append(_Expr(template[start + len(_OPEN) : end].strip()))
        pos = end + len(_CLOSE)


def _find_close(text: str, pos: int) -> int:
    """Index of the ``}}`` closing an expression that starts at `pos`.

    Braces of JMESPath multiselect hashes (``{a: b}``) and quoted literals are skipped, so
    ``{{ {a: x}}}`` closes at the last two braces.
    """
    depth = 0
    i = pos
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in _QUOTES:
            i += 1
            while i < n and text[i] != ch:
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                raise _Unbalanced(f"unterminated {ch} quote in expression")
        elif ch == "{":
            depth += 1
        elif ch == "}":
            if depth > 0:
                depth -= 1
            elif text.startswith(_CLOSE, i):
                return i
        i += 1
    raise _Unbalanced("'{{' without a closing '}}'")


_FUNCTIONS: frozenset[str] = frozenset(Functions().FUNCTION_TABLE)


@lru_cache(maxsize=4096)
def _compile(expression: str) -> ParsedResult:
    """Compile a JMESPath expression; raise ExpressionError naming it."""
    if not expression:
        raise ExpressionError("empty expression '{{ }}'")
    try:
        compiled = jmespath.compile(expression)
    except LexerError as exc:
        raise ExpressionError(
            f"invalid expression {expression!r}: {exc.message} at column {exc.lexer_position}"
        ) from exc
    except ParseError as exc:
        raise ExpressionError(
            f"invalid expression {expression!r}: {exc.msg} at column {exc.lex_position}"
        ) from exc
    except (JMESPathError, RecursionError, ValueError, TypeError) as exc:
        raise ExpressionError(f"invalid expression {expression!r}: {_describe(exc)}") from exc
    unknown = sorted(_function_names(compiled.parsed) - _FUNCTIONS)
    if unknown:
        raise ExpressionError(
            f"invalid expression {expression!r}: unknown function {', '.join(unknown)}()"
        )
    return compiled


def _function_names(ast: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    stack = [ast]
    while stack:
        node = stack.pop()
        if node.get("type") == "function_expression":
            names.add(str(node.get("value")))
        stack.extend(c for c in node.get("children") or [] if isinstance(c, Mapping))
    return names


def _describe(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _evaluate(expression: str, data: dict[str, Any]) -> Any:
    compiled = _compile(expression)
    try:
        return compiled.search(data)
    except (
        JMESPathError,
        RecursionError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        OverflowError,
        ZeroDivisionError,
    ) as exc:
        raise ExpressionError(f"expression {expression!r} failed: {_describe(exc)}") from exc


def to_text(value: Any) -> str:
    """The text of a value inside an interpolated string.

    None -> "", str as is, bool -> "true"/"false", numbers via str(), anything else
    (objects, arrays) as compact JSON.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _parse(template: str) -> tuple[str, ...]:
    try:
        return _segments(template)
    except _Unbalanced as exc:
        raise ExpressionError(f"template {template!r}: {exc}") from exc


def _render_string(template: str, data: dict[str, Any]) -> Any:
    if _OPEN not in template:
        return template
    parts = _parse(template)
    exprs = [p for p in parts if isinstance(p, _Expr)]
    if any(_reads_credentials(p) for p in exprs):
        raise ExpressionError(
            f"template {template!r}: credentials are only available to nodes a worker runs"
        )
    if len(exprs) == 1 and all(isinstance(p, _Expr) or not p.strip() for p in parts):
        return _evaluate(exprs[0], data)
    return "".join(to_text(_evaluate(p, data)) if isinstance(p, _Expr) else p for p in parts)


def _render(template: Any, data: dict[str, Any]) -> Any:
    if isinstance(template, str):
        return _render_string(template, data)
    if isinstance(template, Mapping):
        return {key: _render(value, data) for key, value in template.items()}
    if isinstance(template, list | tuple):
        return [_render(item, data) for item in template]
    return template


def render(template: Any, context: Mapping[str, Any]) -> Any:
    """Render `template` against `context`.

    Dicts (their values, not their keys), lists and strings are rendered recursively; other
    values are returned unchanged. Raises ExpressionError when an expression does not parse,
    its braces are unbalanced, or its evaluation fails.
    """
    data = context if isinstance(context, dict) else dict(context)
    return _render(template, data)


Path = list[str | int]


def render_task(template: Any, context: Mapping[str, Any]) -> tuple[Any, list[Path]]:
    """Render the config of a node a worker runs: like :func:`render`, except that a string
    reading a credential becomes a secret marker (see the module docstring). Returns the
    rendered config and the path (keys and indexes) of every marker in it, so that the worker
    fills in exactly those: data from the trigger or node outputs is never taken for a marker.
    """
    data = context if isinstance(context, dict) else dict(context)
    marked: list[Path] = []
    return _render_marked(template, data, [], marked), marked


def _render_marked(template: Any, data: dict[str, Any], path: Path, marked: list[Path]) -> Any:
    if isinstance(template, str):
        if _OPEN not in template:
            return template
        parts = _parse(template)
        if not any(isinstance(p, _Expr) and _reads_credentials(p) for p in parts):
            return _render_string(template, data)
        marked.append(path)
        return {SECRET_MARKER: _marker_parts(parts, data)}
    if isinstance(template, Mapping):
        return {k: _render_marked(v, data, [*path, k], marked) for k, v in template.items()}
    if isinstance(template, list | tuple):
        return [_render_marked(v, data, [*path, i], marked) for i, v in enumerate(template)]
    return template


def _marker_parts(parts: tuple[str, ...], data: dict[str, Any]) -> list[Any]:
    """Literal text and other expressions as text (adjacent texts joined); each credential
    reference as ``{"credential", "field"}``. A lone reference (blanks around it dropped) keeps
    its value's type, like a lone expression."""
    exprs = [p for p in parts if isinstance(p, _Expr)]
    if len(exprs) == 1 and all(isinstance(p, _Expr) or not p.strip() for p in parts):
        parts = (exprs[0],)
    out: list[Any] = []
    for part in parts:
        if isinstance(part, _Expr):
            ref = _credential_ref(part)
            if ref is None:
                text = to_text(_evaluate(part, data))
            else:
                out.append({"credential": ref[0], "field": ref[1]})
                continue
        else:
            text = part
        if out and isinstance(out[-1], str):
            out[-1] += text
        elif text:
            out.append(text)
    return out


@lru_cache(maxsize=4096)
def _reads_credentials(expression: str) -> bool:
    """Whether the expression reads ``credentials`` from the root of the context."""
    try:
        compiled = _compile(expression)
    except ExpressionError:
        return False
    found: set[str] = set()
    _root_fields(compiled.parsed, True, found)
    return CREDENTIALS in found


def _credential_ref(expression: str) -> tuple[str, str] | None:
    """(name, field) when the expression is exactly ``credentials.<name>.<field>``."""
    if not _reads_credentials(expression):
        return None
    ast = _compile(expression).parsed
    children = ast.get("children") or []
    if ast.get("type") != "subexpression" or len(children) != 3:
        return None
    if not all(c.get("type") == "field" for c in children):
        return None
    return str(children[1]["value"]), str(children[2]["value"])


def _root_fields(ast: Mapping[str, Any], at_root: bool, found: set[str]) -> None:
    """Collect the names the expression looks up on the root of the context."""
    kind = ast.get("type")
    if at_root and kind == "field":
        found.add(str(ast.get("value")))
    for child, child_at_root in _children(ast, at_root):
        _root_fields(child, child_at_root, found)


def _children(ast: Mapping[str, Any], at_root: bool) -> list[tuple[Mapping[str, Any], bool]]:
    """The child nodes of an AST node, each with whether it is evaluated against the root."""
    kind = ast.get("type")
    children = []
    for index, child in enumerate(ast.get("children") or []):
        if not isinstance(child, Mapping):
            continue
        if kind in _SAME_CONTEXT:
            children.append((child, at_root))
        elif kind in _FIRST_CHILD_CONTEXT:
            children.append((child, at_root and index == 0))
        else:
            children.append((child, False))
    return children


def _expressions(template: Any) -> Iterator[tuple[str, _Expr]]:
    """(sub-path, expression) of every well-formed template string's expressions."""
    for path, text in string_paths(template):
        if _OPEN not in text:
            continue
        try:
            parts = _segments(text)
        except _Unbalanced:
            continue
        for part in parts:
            if isinstance(part, _Expr):
                yield path, part


def credential_paths(template: Any) -> list[str]:
    """Sub-paths (as in :func:`expression_errors`) of the strings that read a credential."""
    paths = (path for path, expr in _expressions(template) if _reads_credentials(expr))
    return list(dict.fromkeys(paths))


def has_expression(value: Any) -> bool:
    """True if `value` is a string containing a ``{{`` (an expression or an attempt at one)."""
    return isinstance(value, str) and _OPEN in value


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def string_paths(template: Any, path: str = "") -> list[tuple[str, str]]:
    """(sub-path, string) for every string value in `template`, depth first, in order.

    Sub-paths are dotted/indexed and relative to `template` ("a.b", "[2]", "a[0].b"), each
    prefixed with `path`.
    """
    if isinstance(template, str):
        return [(path, template)]
    found: list[tuple[str, str]] = []
    if isinstance(template, Mapping):
        for key, value in template.items():
            found.extend(string_paths(value, _join(path, str(key))))
    elif isinstance(template, list | tuple):
        for index, item in enumerate(template):
            found.extend(string_paths(item, _join(path, index)))
    return found


def _string_errors(text: str) -> list[str]:
    if _OPEN not in text:
        return []
    try:
        parts = _segments(text)
    except _Unbalanced as exc:
        return [f"{exc} in {text!r}"]
    messages: list[str] = []
    for part in parts:
        if isinstance(part, _Expr):
            try:
                _compile(part)
            except ExpressionError as exc:
                messages.append(str(exc))
                continue
            if _reads_credentials(part) and _credential_ref(part) is None:
                messages.append(
                    f"expression {part!r}: credentials can only be read as {_CREDENTIAL_FORM}"
                )
    return messages


def expression_errors(template: Any) -> list[tuple[str, str]]:
    """(sub-path, message) for each malformed ``{{ }}`` in `template`.

    The sub-path is relative to `template` in dotted/indexed form ("headers.Authorization",
    "set.total", "[2]", "conditions[0].value"); "" is the template itself.
    """
    errors: list[tuple[str, str]] = []
    for path, text in string_paths(template):
        errors.extend((path, message) for message in _string_errors(text))
    return errors


def _node_refs(ast: Mapping[str, Any], at_root: bool, found: set[str]) -> None:
    kind = ast.get("type")
    children = ast.get("children") or []
    if at_root and kind == "subexpression" and len(children) >= 2:
        head, ref = children[0], children[1]
        if (
            head.get("type") == "field"
            and head.get("value") == "nodes"
            and ref.get("type") == "field"
        ):
            found.add(str(ref.get("value")))
    for child, child_at_root in _children(ast, at_root):
        _node_refs(child, child_at_root, found)


def references(template: Any) -> set[str]:
    """The node ids that `template` reads as ``nodes.<id>`` from the root of the context.

    Malformed expressions are ignored (expression_errors reports them).
    """
    found: set[str] = set()
    for _, expr in _expressions(template):
        try:
            compiled = _compile(expr)
        except ExpressionError:
            continue
        _node_refs(compiled.parsed, True, found)
    return found
