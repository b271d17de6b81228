"""The rendering budget: how long one email may take to render and how large a template may make anything.

A template is code a marketer wrote, run for every lead. Jinja's sandbox stops it from reaching the interpreter, but
not from asking for ``{{ 'a' * 10**9 }}`` (gigabytes) or ``{% for i in range(99999) %}{% for j in range(99999) %}``
(hours). A thread cannot be killed in CPython, so the budget is kept *cooperatively*, at the places a template's code
passes through the sandbox:

- **time** (:attr:`RenderLimits.seconds`, per email, its subject and both parts together): checked at every loop
  iteration (each ``for`` iterable is wrapped at compile time), every call, attribute or item lookup, operator, filter
  and piece of output. Between two checks only one sandboxed operation runs, on values the size limit bounds.
- **size** (:attr:`RenderLimits.max_chars`): the output of each part, and any string or list an operation makes. The
  operations that can make far more than they are given are refused *before* they run: ``*`` and ``**``, ``%`` and
  ``str.format`` (their widths and every value they substitute), the padding methods and filters (``center``,
  ``ljust``, ``rjust``, ``zfill``, ``indent``, ``expandtabs``), ``join``, ``replace``, ``translate``, ``wordwrap``,
  ``urlize``, ``tojson``'s indent, ``batch``'s filling, ``slice``'s count, ``lipsum``, and ``~`` (its parts summed).
  A list may hold one list many times over (``[[1] * 1000] * 1000``): cheap to make, a million items once walked. So
  a list's size is its *logical* size, nested items and strings included (:func:`~nurture.rendering.sizes.logical_size`,
  at most ``max_chars`` steps): for ``*`` on a list, before a value is printed, before any filter but those that only
  count or pick items, and for both sides of a comparison. Everything else (``+``, every filter) is checked as soon as
  it returns.

Either way the render fails with :class:`RenderLimitExceeded`, located at the template line like any render error.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from types import FunctionType, MethodType
from typing import Any

from jinja2 import Template, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import TemplateRuntimeError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum, pass_eval_context
from jinja2.visitor import NodeTransformer

from nurture.rendering.sizes import format_size, logical_size, percent_size

MAX_INT_BITS = 1 << 16  # about 20,000 digits: far beyond any number an email prints (Python prints at most 4,300)
_SEQUENCES = (str, list, tuple, bytes)
_NESTED = (list, tuple, set, frozenset, dict, Namespace)
# Names getattr finds on a dict: ``lead.first_name`` on a dict with no such attribute is the item, looked up directly.
_DICT_ATTRIBUTES = frozenset(dir(dict))


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """The budget of one email: ``seconds`` to render it, ``max_chars`` for its parts and anything a template makes."""

    seconds: float = 2.0
    max_chars: int = 1_000_000


def render_limits(settings: Any) -> RenderLimits:
    """The budget ``NURTURE_RENDER_TIMEOUT`` and ``NURTURE_RENDER_MAX_CHARS`` set (a :class:`~nurture.settings.Settings`)."""
    return RenderLimits(seconds=settings.render_timeout, max_chars=settings.render_max_chars)


class RenderLimitExceeded(TemplateRuntimeError):
    """A template went over its rendering budget."""


class _State(threading.local):
    deadline = float("inf")
    chars = 0  # characters of output of the part being rendered


class _LoopsAndConcatsGuarded(NodeTransformer):
    """Wraps every ``for`` iterable, ``~`` concatenation and compared value in a budget check (see
    :class:`BudgetedSandbox`)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_budgeted_loop", [], [], None, None, lineno=node.iter.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        parts = nodes.Tuple(node.nodes, "load", lineno=node.lineno)
        return nodes.Filter(parts, "_budgeted_concat", [], [], None, None, lineno=node.lineno)

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        self.generic_visit(node)
        node.expr = _compared(node.expr)
        for operand in node.ops:
            operand.expr = _compared(operand.expr)
        return node


def _compared(node: nodes.Expr) -> nodes.Expr:
    return nodes.Filter(node, "_budgeted_compared", [], [], None, None, lineno=node.lineno)


class _BudgetedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        _LoopsAndConcatsGuarded().visit(node)
        super().visit_Template(node, frame)


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, keeping the rendering budget of :class:`RenderLimits` (see the module docstring).

    ``with environment.budget():`` starts one email's time budget; outside one, only the size limit applies.
    """

    code_generator_class = _BudgetedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, limits: RenderLimits | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.limits = limits or RenderLimits()
        self.state = _State()
        self.filters = {name: self._guard_filter(name, func) for name, func in self.filters.items()}
        self.filters["_budgeted_loop"] = self._loop
        self.filters["_budgeted_concat"] = self._concat
        self.filters["_budgeted_compared"] = self._compared
        # is_safe_callable as the sandbox has it (not overridden): the shortcut in call() depends on what it checks
        self._plain_is_safe_callable = type(self).is_safe_callable is SandboxedEnvironment.is_safe_callable
        if self.finalize is not None:  # Jinja prints str(finalize(value)): the value is sized before
            self.finalize = self._sized_finalize(self.finalize)

    # -- the budget ------------------------------------------------------------------------------------------------

    def budget(self, deadline: float | None = None) -> _Budget:
        """A context manager: the time budget of one email (or the ``deadline`` of one already running)."""
        return _Budget(self.state, deadline if deadline is not None else time.monotonic() + self.limits.seconds)

    def tick(self) -> None:
        """Raise :class:`RenderLimitExceeded` once the email's time is up."""
        if time.monotonic() > self.state.deadline:
            raise RenderLimitExceeded(
                f"rendering took longer than {self.limits.seconds:g} s (NURTURE_RENDER_TIMEOUT); "
                "a loop or a call runs too long")

    def limit_size(self, size: int, what: str) -> None:
        """Raise :class:`RenderLimitExceeded` if ``what`` would make more than ``max_chars`` characters (or items)."""
        if size > self.limits.max_chars:
            raise RenderLimitExceeded(
                f"{what} would make {size:,} characters, over the limit of {self.limits.max_chars:,} "
                "(NURTURE_RENDER_MAX_CHARS)")

    def count_output(self, size: int) -> None:
        """Add ``size`` characters to the output of the part being rendered."""
        self.state.chars += size
        if self.state.chars > self.limits.max_chars:
            self.limit_size(self.state.chars, "the output")

    def concat(self, pieces: Iterable[str]) -> str:  # Jinja's is a bare "".join
        """Join output pieces (a block, a macro's body, ``{% set %}``), keeping the budget at every piece."""
        deadline, limit, size = self.state.deadline, self.limits.max_chars, 0
        out: list[str] = []
        for piece in pieces:
            size += len(piece)
            if size > limit:
                self.limit_size(size, "the output")
            if time.monotonic() > deadline:
                self.tick()
            out.append(piece)
        return "".join(out)

    def render(self, template: Template, namespace: dict[str, Any]) -> str:
        """``template.render(namespace)``, counting the part's output (and :meth:`count_output`'s) as it is made."""
        self.state.chars, size, limit = 0, 0, self.limits.max_chars
        out: list[str] = []
        try:
            # Loops and calls keep the time; every {{ value }} is counted by finalize (count_output); so the pieces
            # here are text a template holds, or values counted already: their size is checked every 64 pieces.
            pieces = template.root_render_func(_new_context(template, namespace))
            while chunk := list(islice(pieces, 64)):
                out += chunk
                size += sum(map(len, chunk))
                if size > limit:
                    self.limit_size(size, "the output")
        except Exception:  # noqa: BLE001 - as Template.render: Jinja rewrites the traceback to the template line
            self.handle_exception()
        return "".join(out)

    @pass_context  # never folded into a constant at compile time
    def _loop(self, _context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
        tick = self.tick
        for item in iterable:
            tick()
            yield item

    def limit_nested(self, value: Any, what: str) -> None:
        """Raise :class:`RenderLimitExceeded` if ``value`` holds more than ``max_chars`` items and characters, nested
        ones included (a list repeating one list a million times is a million items once printed)."""
        if isinstance(value, _NESTED):
            self.limit_size(logical_size(value, self.limits.max_chars), what)

    def _sized_finalize(self, finalize: Callable[[Any], Any]) -> Callable[[Any], Any]:
        limit_nested = self.limit_nested

        def sized(value: Any) -> Any:
            if type(value) is not str:
                limit_nested(value, "printing a value")
            return finalize(value)

        return sized

    @pass_eval_context
    def _concat(self, eval_ctx: EvalContext, parts: tuple[Any, ...]) -> str:
        limit, size = self.limits.max_chars, 0
        for part in parts:
            size += len(part) if type(part) is str else logical_size(part, limit)
            if size > limit:
                self.limit_size(size, "'~'")
        return markup_join(parts) if eval_ctx.autoescape else str_join(parts)

    def _compared(self, value: Any) -> Any:
        self.limit_nested(value, "a comparison")
        return value

    # -- the sandbox's hooks ---------------------------------------------------------------------------------------

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.tick()
        if type(obj) is dict and type(attribute) is str and attribute not in _DICT_ATTRIBUTES:
            # What the sandbox does for it, without the AttributeError it raises and catches on the way.
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.tick()
        if operator == "*":
            if isinstance(left, int) and isinstance(right, _SEQUENCES):
                left, right = right, left
            if isinstance(left, (str, bytes)) and isinstance(right, int):
                self.limit_size(len(left) * right, "'*'")
            elif isinstance(left, (list, tuple)) and isinstance(right, int) and right > 0:
                self.limit_size(logical_size(left, self.limits.max_chars // right + 1) * right, "'*'")
            elif isinstance(left, int) and isinstance(right, int):
                self._limit_bits(left.bit_length() + right.bit_length(), "'*'")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                self._limit_bits(max(left.bit_length(), 1) * right, "'**'")
        elif operator == "%" and isinstance(left, str):
            self.limit_size(percent_size(left, right, self.limits.max_chars), "'%' formatting")
        result = super().call_binop(context, operator, left, right)
        if operator == "+" and isinstance(result, _SEQUENCES):
            self.limit_size(len(result), "'+'")
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.tick()
        if (type(__obj) is MethodType and type(__context) is Context and __self._plain_is_safe_callable
                and type(__obj.__func__) is FunctionType and not __obj.__func__.__dict__
                and not isinstance(__obj.__self__, str)):
            # A method such as track(): its function carries no attribute at all, so none of the checks below nor
            # those of the sandbox (unsafe_callable, alters_data) and of Context.call (jinja_pass_arg) can apply.
            # It is called as Context.call calls it, without the attribute lookups that fail on the way.
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            try:
                result = __obj(*args, **kwargs)
            except StopIteration:
                result = __context.environment.undefined(
                    "value was undefined because a callable raised a StopIteration exception")
        else:
            result = __self._checked_call(__context, __obj, *args, **kwargs)
        if isinstance(result, _SEQUENCES) and len(result) > __self.limits.max_chars:
            __self.limit_size(len(result), "a call")
        return result

    def _checked_call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox hands str.format out wrapped
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str):
            __self._check_str_method(owner, getattr(method, "__name__", ""), args, kwargs)
            if getattr(method, "__name__", "") == "join" and args:
                args = (list(args[0]), *args[1:])
                __self.limit_size(_joined_size(owner, args[0], __self.limits.max_chars), "join")
        elif __obj is generate_lorem_ipsum:
            words = _arg(args, kwargs, 0, "n", 5) * _arg(args, kwargs, 3, "max", 100)
            __self.limit_size(words * 12 if isinstance(words, int) else 0, "lipsum")
        return super().call(__context, __obj, *args, **kwargs)

    def _check_str_method(self, text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if name in ("center", "ljust", "rjust", "zfill"):
            width = _arg(args, kwargs, 0, "width", 0)
            self.limit_size(width if isinstance(width, int) else 0, name)
        elif name == "expandtabs":
            size = _arg(args, kwargs, 0, "tabsize", 8)
            self.limit_size(len(text) + text.count("\t") * (size if isinstance(size, int) else 0), name)
        elif name == "format":
            self.limit_size(format_size(text, args, kwargs, self.limits.max_chars, self._resolve), "str.format")
        elif name == "format_map" and args and isinstance(args[0], dict):
            self.limit_size(format_size(text, (), args[0], self.limits.max_chars, self._resolve), "str.format_map")
        elif name == "replace" and len(args) >= 2:
            self.limit_size(_replaced_size(text, args[0], args[1], args[2] if len(args) > 2 else -1), name)
        elif name == "translate" and args and isinstance(args[0], dict):
            longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
            self.limit_size(len(text) * max(longest, 1), name)

    def _resolve(self, obj: Any, is_attribute: bool, key: Any) -> Any:
        return self.getattr(obj, key) if is_attribute else self.getitem(obj, key)

    def _limit_bits(self, bits: int, what: str) -> None:
        if bits > MAX_INT_BITS:
            raise RenderLimitExceeded(f"{what} would make a number of about {bits:,} bits, over {MAX_INT_BITS:,}")

    # -- filters -----------------------------------------------------------------------------------------------------

    def _guard_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` with the budget kept: time before, nested values and known amplifiers before, the size after."""
        check = _FILTER_CHECKS.get(name)
        skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context/environment comes first
        limit = self.limits.max_chars
        nested = name not in _STRUCTURAL_FILTERS

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.tick()
            if nested and len(args) > skip and type(args[skip]) is not str:
                self.limit_nested(args[skip], f"the filter {name!r}")
            if check is not None:
                args = check(self, args[:skip], args[skip:], kwargs)
            result = func(*args, **kwargs)
            if isinstance(result, _SEQUENCES) and len(result) > limit:
                self.limit_size(len(result), f"the filter {name!r}")
            return result

        return guarded


def _new_context(template: Template, namespace: dict[str, Any]) -> Context:
    """``template.new_context(namespace)``: the same context, with the template's globals (a ChainMap of dicts) merged by
    dict updates rather than through ChainMap's Python-level iteration, twice, for every part of every email."""
    chained = template.globals
    if type(chained) is not ChainMap or any(type(mapping) is not dict for mapping in chained.maps):
        return template.new_context(namespace)
    merged: dict[str, Any] = {}
    for mapping in reversed(chained.maps):  # ChainMap's order: the last map's keys first, the first map's values win
        merged.update(mapping)
    environment = template.environment
    return environment.context_class(environment, dict(merged, **namespace), template.name, template.blocks,
                                     globals=merged)


class _Budget:
    __slots__ = ("deadline", "previous", "state")

    def __init__(self, state: _State, deadline: float) -> None:
        self.state, self.deadline, self.previous = state, deadline, float("inf")

    def __enter__(self) -> None:
        self.previous, self.state.deadline = self.state.deadline, min(self.deadline, self.state.deadline)

    def __exit__(self, *exc: object) -> None:
        self.state.deadline = self.previous


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _replaced_size(text: str, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return len(text)
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return len(text) + times * max(len(new) - len(old), 0)


def _joined_size(separator: str, items: list[Any], limit: int) -> int:
    size = len(separator) * max(len(items) - 1, 0)
    for item in items:
        if size > limit:
            break
        size += len(item) if type(item) is str else logical_size(item, limit - size)
    return size


_Check = Callable[[BudgetedSandbox, tuple[Any, ...], tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]


def _check_indent(env: BudgetedSandbox, lead: tuple[Any, ...], args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    text, width = str(args[0]), _arg(args, kw, 1, "width", 4)
    prefix = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    env.limit_size(len(text) + (text.count("\n") + 1) * prefix, "the filter 'indent'")
    return (*lead, *args)


def _check_format(env: BudgetedSandbox, lead: tuple[Any, ...], args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    env.limit_size(percent_size(str(args[0]), kw or tuple(args[1:]), env.limits.max_chars), "the filter 'format'")
    return (*lead, *args)


def _check_join(env: BudgetedSandbox, lead: tuple[Any, ...], args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    items = list(args[0])
    separator = _arg(args, kw, 1, "d", "")
    if _arg(args, kw, 2, "attribute", None) is None:
        env.limit_size(_joined_size(str(separator), items, env.limits.max_chars), "the filter 'join'")
    return (*lead, items, *args[1:])


def _check_replace(env: BudgetedSandbox, lead: tuple[Any, ...], args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    if len(args) >= 3:
        count = _arg(args, kw, 3, "count", None)
        env.limit_size(_replaced_size(str(args[0]), args[1], args[2], -1 if count is None else count),
                       "the filter 'replace'")
    return (*lead, *args)


def _check_wordwrap(env: BudgetedSandbox, lead: tuple[Any, ...], args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    text, width = str(args[0]), _arg(args, kw, 1, "width", 79)
    wrap = _arg(args, kw, 3, "wrapstring", None) or "\n"
    lines = len(text) // max(width if isinstance(width, int) else 1, 1) + text.count("\n") + 1
    env.limit_size(len(text) + lines * len(str(wrap)), "the filter 'wordwrap'")
    return (*lead, *args)


def _check_urlize(env: BudgetedSandbox, lead: tuple[Any, ...], args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    text = str(args[0])
    extra = sum(len(str(_arg(args, kw, i, n, None) or "")) for i, n in ((3, "target"), (4, "rel")))
    env.limit_size(len(text) + (len(text) // 4 + 1) * extra, "the filter 'urlize'")
    return (*lead, *args)


def _check_tojson(env: BudgetedSandbox, lead: tuple[Any, ...], args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    indent = _arg(args, kw, 1, "indent", None)
    if isinstance(indent, int) and indent > 0:
        env.limit_size(logical_size(args[0], env.limits.max_chars) * (indent + 2), "the filter 'tojson'")
    return (*lead, *args)


def _check_center(env: BudgetedSandbox, lead: tuple[Any, ...], args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    width = _arg(args, kw, 1, "width", 80)
    env.limit_size(width if isinstance(width, int) else 0, "the filter 'center'")
    return (*lead, *args)


def _check_batch(env: BudgetedSandbox, lead: tuple[Any, ...], args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    count = _arg(args, kw, 1, "linecount", 0)
    if _arg(args, kw, 2, "fill_with", None) is not None:  # the last batch is filled up to the count
        env.limit_size(count if isinstance(count, int) else 0, "the filter 'batch'")
    return (*lead, *args)


def _check_slice(env: BudgetedSandbox, lead: tuple[Any, ...], args: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
    count = _arg(args, kw, 1, "slices", 0)  # one list per slice, even empty
    env.limit_size(count if isinstance(count, int) else 0, "the filter 'slice'")
    return (*lead, *args)


_FILTER_CHECKS: dict[str, _Check] = {
    "indent": _check_indent, "format": _check_format, "join": _check_join, "replace": _check_replace,
    "wordwrap": _check_wordwrap, "urlize": _check_urlize, "tojson": _check_tojson, "center": _check_center,
    "batch": _check_batch, "slice": _check_slice,
}
# Filters that only take items out of a value or count them: they never print, join or compare what it holds.
_STRUCTURAL_FILTERS = frozenset({
    "length", "count", "first", "last", "random", "batch", "slice", "map", "select", "reject", "selectattr",
    "rejectattr", "attr", "default", "d", "items", "reverse",
})
