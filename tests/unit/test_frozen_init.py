"""core.frozen.quick_init: the same instances as the generated __init__ makes, attributes kept inline."""

from __future__ import annotations

import dataclasses
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any

import pytest

from nurture.application.event_input import EventIn, EventResult
from nurture.core.facts import Engagement, LeadView
from nurture.core.frozen import quick_init
from nurture.core.scoring import ScoreBreakdown


@dataclass(frozen=True)
class Plain:
    a: int
    b: str = "b"
    c: dict[str, Any] = field(default_factory=dict)
    d: Any = None


Quick = quick_init(dataclass(frozen=True)(type("Quick", (), {
    "__annotations__": dict(Plain.__annotations__), "__module__": __name__, "b": "b",
    "c": field(default_factory=dict), "d": None})))


@pytest.mark.parametrize(("args", "kwargs"), [((1,), {}), ((1, "x"), {}), ((1, "x", {"k": 1}, 2), {}),
                                               ((), {"a": 1, "d": 3}), ((1,), {"c": None})])
def test_instances_are_those_of_the_generated_init(args, kwargs):
    mine, theirs = Quick(*args, **kwargs), Plain(*args, **kwargs)
    assert list(vars(mine).items()) == list(vars(theirs).items())
    assert repr(mine).replace("Quick", "Plain") == repr(theirs)


def test_instances_stay_frozen_equal_and_hashable_with_fresh_defaults():
    first, second = Quick(1), Quick(1)
    assert first == second and hash(Quick(1, c=None, d=2)) == hash(Plain(1, c=None, d=2))  # type: ignore[arg-type]
    assert first.c is not second.c
    with pytest.raises(FrozenInstanceError):
        first.a = 2  # type: ignore[misc]
    assert dataclasses.replace(first, a=5) == Quick(5)
    with pytest.raises(TypeError):
        Quick()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Quick(1, e=2)  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", [EventIn, EventResult, LeadView, Engagement, ScoreBreakdown])
def test_the_intakes_values_take_every_field_as_before(cls):
    names = [f.name for f in dataclasses.fields(cls)]
    values = {name: object() for name in names}
    made = cls(**values)
    assert list(vars(made)) == names and all(getattr(made, name) is values[name] for name in names)
    assert made == cls(*values.values())


def test_classes_it_cannot_speed_up_are_refused():
    @dataclass(frozen=True)
    class Later:
        a: int

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError):
        quick_init(Later)

    @dataclass
    class Mutable:
        a: int

    with pytest.raises(TypeError):
        quick_init(Mutable)


def test_quick_init_refuses_init_vars_and_a_field_named_self():
    @dataclass(frozen=True)
    class WithInitVar:
        a: int
        b: dataclasses.InitVar[int]  # the module's own name: dataclasses reads the annotation's text

    assert [f.name for f in dataclasses.fields(WithInitVar)] == ["a"]

    @dataclass(frozen=True)
    class WithSelf:
        self: int

    for cls in (WithInitVar, WithSelf):
        with pytest.raises(TypeError):
            quick_init(cls)


def test_quick_init_shows_a_default_factory_as_the_generated_init_does():
    import inspect

    @dataclass(frozen=True)
    class Plain:
        items: list[int] = field(default_factory=list)

    generated = str(inspect.signature(Plain.__init__))
    assert str(inspect.signature(quick_init(Plain).__init__)) == generated


def test_quick_init_values_take_the_memory_of_the_generated_ones():
    """No separate __dict__ per instance: a million values kept (a rescoring's histories) cost what they did."""
    import tracemalloc

    @dataclass(frozen=True)
    class Plain:
        type: str
        properties: dict[str, Any] = field(default_factory=dict)

    @quick_init
    @dataclass(frozen=True)
    class Quick:
        type: str
        properties: dict[str, Any] = field(default_factory=dict)

    sizes = []
    for cls in (Plain, Quick):
        tracemalloc.start()
        kept = [cls("page_view") for _ in range(2000)]
        sizes.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
        del kept
    assert sizes[1] <= sizes[0] * 1.05


@pytest.mark.parametrize("name", ["_set", "_FACTORY", "_default_x", "_factory_x"])
def test_quick_init_refuses_a_field_named_as_its_own_names(name):
    cls = dataclasses.make_dataclass("Named", [(name, int)], frozen=True)
    with pytest.raises(TypeError):
        quick_init(cls)
