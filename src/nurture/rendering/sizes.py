"""How large a value a template holds really is, and how much formatting would make of it, without building anything.

A list may hold itself many times over: ``[[1] * 1000] * 1000`` is a thousand references to one list, cheap to make,
but a million items once printed, joined, summed or serialised. :func:`logical_size` counts what such an operation
would walk (every nested item and every string's characters, following a repeated reference each time it occurs)
and stops as soon as the count passes its cap, so it costs at most ``cap`` steps whatever the value is.
"""

from __future__ import annotations

import re
from _string import formatter_field_name_split  # type: ignore[import-not-found]  # string.Formatter uses it
from collections.abc import Callable, Mapping
from string import Formatter
from typing import Any

from jinja2.utils import Namespace

_PERCENT = re.compile(r"%(?:\(([^)]*)\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.S)
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")
_HUGE = 1 << 62
_REPR = 10  # the most characters repr() makes of one character ("\U0010ffff")
_NUMBER = 330  # the most characters a float prints as ("%f" % 1e308)
_CONTAINERS = (list, tuple, set, frozenset, dict, Namespace)


def logical_size(value: Any, cap: int) -> int:
    """The items and characters ``value`` holds, nested ones included, counted up to a little over ``cap``."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, _CONTAINERS):
        return _scalar_size(value)
    total = 0
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += len(item)
            if total > cap:
                return total
            extend(item)
        elif isinstance(item, dict):
            total += 2 * len(item)
            if total > cap:
                return total
            extend(item.keys())
            extend(item.values())
        elif isinstance(item, Namespace):
            stack.append(item._Namespace__attrs)  # what its repr prints
        if total > cap:
            return total
    return total


def _scalar_size(value: Any) -> int:
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if isinstance(value, float):
        return _NUMBER
    return 1


def percent_size(template: str, values: Any, cap: int) -> int:
    """The characters ``template % values`` makes: the template, its widths and precisions (``%*s`` takes its width
    from values) and every value it substitutes, up to a little over ``cap``."""
    args = values if isinstance(values, tuple) else (values,)
    mapping = values if isinstance(values, Mapping) else None
    position, total = 0, len(template)
    sizes: dict[Any, int] = {}
    for match in _PERCENT.finditer(template):
        key, width, precision, conversion = match.groups()
        if conversion == "%":
            continue
        for part in (width, precision):
            if part == "*":
                value = args[position] if position < len(args) else 0
                position += 1
                total += abs(value) if isinstance(value, int) else 0
            elif part:
                total += int(part) if len(part) < 12 else _HUGE
        if key is not None:
            value = mapping.get(key) if mapping is not None else None
        else:
            value = args[position] if position < len(args) else None
            position += 1
        total += _substituted(sizes, (key, position, conversion), value, conversion, cap)
        if total > cap:
            break
    return total


def format_size(template: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], cap: int,
                resolve: Callable[[Any, bool, Any], Any]) -> int:
    """The characters ``template.format(*args, **kwargs)`` makes: the template, its widths and precisions (nested
    ``{:{}}`` widths count as the largest number given) and every value it substitutes, looked up with ``resolve``
    (``obj, is_attribute, key``) for ``{0.name}`` and ``{0[key]}``, up to a little over ``cap``."""
    total, auto = len(template), 0
    numbers = [abs(v) for v in (*args, *kwargs.values()) if isinstance(v, int)]
    sizes: dict[Any, int] = {}
    for _literal, field, spec, conversion in Formatter().parse(template):
        if field is None:
            continue
        if spec and "{" in spec:
            total += max(numbers, default=0) * spec.count("{")
        elif spec and (match := _FORMAT_SPEC.match(spec)) is not None:
            total += sum(int(part) if len(part) < 12 else _HUGE for part in match.groups() if part)
        cached = sizes.get((field, conversion))
        if cached is None:
            first, rest = _split_field(field)
            if first == "":
                first, auto = auto, auto + 1
            cached = sizes[field, conversion] = _substituted(
                {}, None, _lookup(first, rest, args, kwargs, resolve), conversion or "s", cap)
        total += cached
        auto += spec.count("{") if spec else 0
        if total > cap:
            break
    return total


def _split_field(field: str) -> tuple[Any, list[tuple[bool, Any]]]:
    try:
        first, rest = formatter_field_name_split(field)
        return first, list(rest)
    except ValueError:
        return field, []


def _lookup(first: Any, rest: list[tuple[bool, Any]], args: tuple[Any, ...], kwargs: Mapping[str, Any],
            resolve: Callable[[Any, bool, Any], Any]) -> Any:
    try:
        value = args[first] if isinstance(first, int) else kwargs[first]
        for is_attribute, key in rest:
            value = resolve(value, is_attribute, key)
    except Exception:  # noqa: BLE001 - the format call itself reports a missing field
        return None
    return value


def _substituted(sizes: dict[Any, int], key: Any, value: Any, conversion: str, cap: int) -> int:
    if key is not None and key in sizes:
        return sizes[key]
    if conversion in "sra":
        size = logical_size(value, cap) * (_REPR if conversion in "ra" else 1)
    elif conversion == "c":
        size = 1
    else:
        size = _scalar_size(value) if isinstance(value, (int, float)) else 1
    if key is not None:
        sizes[key] = size
    return size
