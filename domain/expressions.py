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

Evaluation is bounded (:class:`ExpressionLimits`): each string spends from one budget of work
units (every AST node visited costs 1, and every list, object or string an expression builds
costs its length too; see `_Bounded`), past which it raises :class:`ExpressionTooCostly`; and
what it produces may not exceed ``result_bytes`` as compact JSON (nor may an interpolated
string), else :class:`ExpressionTooLarge`. So a short expression cannot make a process build or
serialise gigabytes (``[@,@,…] | [@,@,…] | …`` multiplies references, not memory, until the
result is written out).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import jmespath
from jmespath.exceptions import JMESPathError, LexerError, ParseError
from jmespath.functions import Functions
from jmespath.parser import ParsedResult
from jmespath.visitor import Options, TreeInterpreter

from domain.json_limits import json_size

__all__ = [
    "CREDENTIALS",
    "DEFAULT_EXPRESSION_LIMITS",
    "SECRET_MARKER",
    "ExpressionError",
    "ExpressionLimits",
    "ExpressionTooCostly",
    "ExpressionTooLarge",
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
    """An expression that does not parse or cannot be evaluated against its context. `code` is
    the error type a node failing with it records."""

    code: str = "expression_error"


class ExpressionTooCostly(ExpressionError):
    """Evaluating a string's expressions would spend more than `ExpressionLimits.cost` units."""

    code = "expression_too_costly"


class ExpressionTooLarge(ExpressionError):
    """An expression's result, or an interpolated string, is larger than
    `ExpressionLimits.result_bytes` as compact JSON."""

    code = "expression_too_large"


class ExpressionLimits(NamedTuple):
    """Bounds of one string's evaluation: `cost` work units for all its expressions together,
    `result_bytes` for each expression's result (compact JSON) and for the rendered string."""

    cost: int
    result_bytes: int


# The settings' defaults (`max_expression_cost`, `max_expression_result_bytes`).
DEFAULT_EXPRESSION_LIMITS = ExpressionLimits(cost=100_000, result_bytes=1024 * 1024)


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


# ---------------------------------------------------------------- bounded evaluation

# AST nodes that build a new list, object or string (their result's length is charged).
_BUILDS = frozenset(
    {
        "multi_select_list",
        "multi_select_dict",
        "projection",
        "value_projection",
        "filter_projection",
        "flatten",
        "slice",
    }
)
# Functions whose work does not grow with their arguments' length.
_CONSTANT_WORK = frozenset({"length", "type", "not_null", "to_array"})
# Functions that answer one of their arguments or an element of one (nothing is built).
_SELECTORS = frozenset({"not_null", "max", "min", "max_by", "min_by"})
_SHOWN = 120


def _short(text: str) -> str:
    """`text` for an error message: at most about _SHOWN characters."""
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…")


class _Budget:
    """The work units left to one string's expressions, and whether the expression being
    evaluated built anything (a result that is only looked up in the context needs no size
    check: other limits bound the context)."""

    __slots__ = ("limits", "spent", "built", "expression", "_interpreter")

    def __init__(self, limits: ExpressionLimits) -> None:
        self.limits = limits
        self.spent = 0
        self.built = False
        self.expression = ""
        self._interpreter: _Bounded | None = None

    def interpreter(self) -> _Bounded:
        if self._interpreter is None:
            self._interpreter = _Bounded(self)
        return self._interpreter

    def charge(self, units: int) -> None:
        self.spent += units
        if self.spent > self.limits.cost:
            self.too_costly()

    def remaining(self) -> int:
        return max(self.limits.cost - self.spent, 0)

    def too_costly(self) -> None:
        raise ExpressionTooCostly(
            f"expression {_short(self.expression)} is too costly: evaluating it takes more than"
            f" {self.limits.cost} units of work"
        )


def _size_of(value: Any) -> int:
    return len(value) if isinstance(value, list | dict | str) else 0


def _compare_cost(left: Any, right: Any, remaining: int) -> int:
    """An upper bound of the work of `left == right` (or an ordering of two strings)."""
    if left is right:
        return 0
    if isinstance(left, str) and isinstance(right, str):
        return min(len(left), len(right))
    if isinstance(left, list | dict) and isinstance(right, list | dict):
        return min(json_size(left, remaining), json_size(right, remaining))
    return 0


class _BoundedFunctions(Functions):
    """JMESPath's functions, charging their work to the budget: the length of their arguments
    and of what they build; `join` and `to_string` are refused before they build a string
    larger than what is left."""

    def __init__(self, budget: _Budget) -> None:
        super().__init__()
        self._budget = budget

    def call_function(self, function_name: str, resolved_args: list[Any]) -> Any:
        budget = self._budget
        if function_name not in _CONSTANT_WORK:
            budget.charge(sum(_size_of(arg) for arg in resolved_args))
        if function_name == "join":
            self._charge_join(resolved_args)
        elif function_name == "to_string" and resolved_args:
            if not isinstance(resolved_args[0], str):
                budget.charge(json_size(resolved_args[0], budget.remaining() + 1))
        elif function_name == "contains" and len(resolved_args) == 2:
            subject, search = resolved_args
            if isinstance(subject, list) and isinstance(search, list | dict | str):
                budget.charge(json_size(subject, budget.remaining() + 1))
        result = super().call_function(function_name, resolved_args)
        if function_name not in _SELECTORS and not any(result is arg for arg in resolved_args):
            budget.built = True
            budget.charge(_size_of(result))
        return result

    def _charge_join(self, args: Sequence[Any]) -> None:
        if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], list):
            return  # the signature check refuses it
        separator, items = args
        remaining = self._budget.remaining()
        total = len(separator) * max(len(items) - 1, 0)
        for item in items:
            if total > remaining:
                break
            total += len(item) if isinstance(item, str) else 0
        self._budget.charge(total)


_ORDERING_TYPES = (int, float, str)


class _Bounded(TreeInterpreter):
    """JMESPath's tree interpreter on a budget: each node visited costs 1, plus the length of
    the list, object or string it builds (`_BUILDS`); equality of containers or strings costs
    their size (bounded by what is left); a flatten is charged before its list is built.
    One per string (its budget); the methods' table is shared by all."""

    _methods: dict[str, Any] = {}

    def __init__(self, budget: _Budget) -> None:
        super().__init__(Options(custom_functions=_BoundedFunctions(budget)))
        self._budget = budget

    def visit(self, node: dict[str, Any], value: Any) -> Any:
        node_type = node["type"]
        method = self._methods.get(node_type)
        if method is None:
            method = getattr(type(self), f"visit_{node_type}", None)
            if method is None:
                raise NotImplementedError(node_type)
            self._methods[node_type] = method
        result = method(self, node, value)
        budget = self._budget
        if node_type in _BUILDS:
            budget.built = True
            budget.spent += 1 + _size_of(result)
        else:
            budget.spent += 1
        if budget.spent > budget.limits.cost:
            budget.too_costly()
        return result

    def visit_comparator(self, node: dict[str, Any], value: Any) -> Any:
        left = self.visit(node["children"][0], value)
        right = self.visit(node["children"][1], value)
        if left is not right and isinstance(left, list | dict | str):
            budget = self._budget
            budget.charge(_compare_cost(left, right, budget.remaining() + 1))
        # jmespath's own comparison, on the values already computed: ordering operators
        # compare numbers and strings only (booleans are not numbers).
        operator = node["value"]
        if operator not in self._EQUALITY_OPS and not (
            isinstance(left, _ORDERING_TYPES)
            and isinstance(right, _ORDERING_TYPES)
            and not isinstance(left, bool)
            and not isinstance(right, bool)
        ):
            return None
        return self.COMPARATOR_FUNC[operator](left, right)

    def visit_flatten(self, node: dict[str, Any], value: Any) -> Any:
        base = self.visit(node["children"][0], value)
        if not isinstance(base, list):
            return None
        size = sum(len(item) if isinstance(item, list) else 1 for item in base)
        self._budget.charge(size)
        merged: list[Any] = []
        for item in base:
            if isinstance(item, list):
                merged.extend(item)
            else:
                merged.append(item)
        return merged


def _evaluate(expression: str, data: dict[str, Any], budget: _Budget) -> Any:
    """The expression's value, spending from `budget`; ExpressionTooLarge if it built a result
    larger than the limit."""
    compiled = _compile(expression)
    budget.expression = expression
    budget.built = False
    try:
        result = budget.interpreter().visit(compiled.parsed, data)
    except ExpressionError:
        raise
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
    if budget.built:
        limit = budget.limits.result_bytes
        if json_size(result, limit) > limit:
            raise ExpressionTooLarge(
                f"expression {_short(expression)} produces more than {limit} bytes"
            )
    return result


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


def _text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class _Interpolation:
    """The text of an interpolated string, built part by part within `result_bytes`."""

    def __init__(self, template: str, budget: _Budget) -> None:
        self.template = template
        self.budget = budget
        self.used = 0

    def room(self) -> int:
        return self.budget.limits.result_bytes - self.used

    def add(self, text: str) -> str:
        self.used += _text_bytes(text)
        if self.used > self.budget.limits.result_bytes:
            self.too_large()
        return text

    def too_large(self) -> None:
        raise ExpressionTooLarge(
            f"template {_short(self.template)} renders to more than"
            f" {self.budget.limits.result_bytes} bytes"
        )

    def text_of(self, expression: str, data: dict[str, Any]) -> str:
        value = _evaluate(expression, data, self.budget)
        room = self.room()
        if isinstance(value, list | dict) and json_size(value, room) > room:
            self.too_large()
        try:
            text = to_text(value)
        except (RecursionError, ValueError, TypeError) as exc:
            raise ExpressionError(f"expression {expression!r} failed: {_describe(exc)}") from exc
        return self.add(text)


def _lone(parts: tuple[str, ...]) -> _Expr | None:
    """The expression of a template that is one expression (blanks around it aside)."""
    exprs = [p for p in parts if isinstance(p, _Expr)]
    if len(exprs) == 1 and all(isinstance(p, _Expr) or not p.strip() for p in parts):
        return exprs[0]
    return None


def _render_string(template: str, data: dict[str, Any], limits: ExpressionLimits) -> Any:
    if _OPEN not in template:
        return template
    parts = _parse(template)
    if any(isinstance(p, _Expr) and _reads_credentials(p) for p in parts):
        raise ExpressionError(
            f"template {template!r}: credentials are only available to nodes a worker runs"
        )
    budget = _Budget(limits)
    lone = _lone(parts)
    if lone is not None:
        return _evaluate(lone, data, budget)
    text = _Interpolation(template, budget)
    return "".join(text.text_of(p, data) if isinstance(p, _Expr) else text.add(p) for p in parts)


def _render(template: Any, data: dict[str, Any], limits: ExpressionLimits) -> Any:
    if isinstance(template, str):
        return _render_string(template, data, limits)
    if isinstance(template, Mapping):
        return {key: _render(value, data, limits) for key, value in template.items()}
    if isinstance(template, list | tuple):
        return [_render(item, data, limits) for item in template]
    return template


def render(
    template: Any,
    context: Mapping[str, Any],
    limits: ExpressionLimits = DEFAULT_EXPRESSION_LIMITS,
) -> Any:
    """Render `template` against `context`.

    Dicts (their values, not their keys), lists and strings are rendered recursively; other
    values are returned unchanged. Raises ExpressionError when an expression does not parse,
    its braces are unbalanced, or its evaluation fails; ExpressionTooCostly or
    ExpressionTooLarge when a string's expressions cross `limits`.
    """
    data = context if isinstance(context, dict) else dict(context)
    return _render(template, data, limits)


Path = list[str | int]


def render_task(
    template: Any,
    context: Mapping[str, Any],
    limits: ExpressionLimits = DEFAULT_EXPRESSION_LIMITS,
) -> tuple[Any, list[Path]]:
    """Render the config of a node a worker runs: like :func:`render`, except that a string
    reading a credential becomes a secret marker (see the module docstring). Returns the
    rendered config and the path (keys and indexes) of every marker in it, so that the worker
    fills in exactly those: data from the trigger or node outputs is never taken for a marker.
    """
    data = context if isinstance(context, dict) else dict(context)
    marked: list[Path] = []
    return _render_marked(template, data, [], marked, limits), marked


def _render_marked(
    template: Any, data: dict[str, Any], path: Path, marked: list[Path], limits: ExpressionLimits
) -> Any:
    if isinstance(template, str):
        if _OPEN not in template:
            return template
        parts = _parse(template)
        if not any(isinstance(p, _Expr) and _reads_credentials(p) for p in parts):
            return _render_string(template, data, limits)
        marked.append(path)
        return {SECRET_MARKER: _marker_parts(template, parts, data, limits)}
    if isinstance(template, Mapping):
        return {k: _render_marked(v, data, [*path, k], marked, limits) for k, v in template.items()}
    if isinstance(template, list | tuple):
        return [_render_marked(v, data, [*path, i], marked, limits) for i, v in enumerate(template)]
    return template


def _marker_parts(
    template: str, parts: tuple[str, ...], data: dict[str, Any], limits: ExpressionLimits
) -> list[Any]:
    """Literal text and other expressions as text (adjacent texts joined); each credential
    reference as ``{"credential", "field"}``. A lone reference (blanks around it dropped) keeps
    its value's type, like a lone expression."""
    lone = _lone(parts)
    if lone is not None:
        parts = (lone,)
    text = _Interpolation(template, _Budget(limits))
    out: list[Any] = []
    for part in parts:
        if isinstance(part, _Expr):
            ref = _credential_ref(part)
            if ref is not None:
                out.append({"credential": ref[0], "field": ref[1]})
                continue
            piece = text.text_of(part, data)
        else:
            piece = text.add(part)
        if out and isinstance(out[-1], str):
            out[-1] += piece
        elif piece:
            out.append(piece)
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
