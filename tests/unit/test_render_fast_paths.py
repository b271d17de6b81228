"""The rendering's shortcuts answer exactly what the sandbox's general paths answer."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import DictLoader, StrictUndefined, Undefined, pass_context
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, unsafe

from nurture.rendering import EmailRenderer, LinkBuilder
from nurture.rendering.environment import _MARKER, _clean_subject, _fill_markers, _split_markers
from nurture.rendering.limits import BudgetedSandbox, _new_context
from nurture.signing import Signer


class _DictWithExtra(dict):  # type: ignore[type-arg]
    extra = "an attribute"


@pytest.mark.parametrize("obj", [
    {"first_name": "Dana", "items": "an item named items", "_private": 1, "get": "x", "none": None},
    {},
    _DictWithExtra(first_name="Dana", extra="the item"),
])
@pytest.mark.parametrize("attribute", ["first_name", "items", "get", "keys", "_private", "__class__", "__len__",
                                       "missing", "none", "extra", "copy", "update", "pop", "fromkeys"])
def test_an_attribute_of_a_dict_is_what_the_sandbox_gives(obj: dict[str, Any], attribute: str) -> None:
    env = BudgetedSandbox(undefined=StrictUndefined)
    reference = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    ours, theirs = env.getattr(obj, attribute), reference.getattr(obj, attribute)
    assert type(ours) is type(theirs)
    if isinstance(theirs, StrictUndefined):  # missing, or unsafe: printing it fails, and in the same way
        with pytest.raises(Exception) as expected:  # an UndefinedError, or a SecurityError when unsafe
            str(theirs)
        with pytest.raises(Exception) as got:
            str(ours)
        assert (type(got.value), str(got.value)) == (type(expected.value), str(expected.value))
    elif callable(theirs):
        assert getattr(ours, "__name__", None) == getattr(theirs, "__name__", None)
    else:
        assert ours == theirs


def test_the_context_is_the_one_jinja_makes() -> None:
    env = BudgetedSandbox(loader=DictLoader({"t": "{{ x }} {{ range }} {{ shadow }}"}))
    env.globals["shadow"] = "env"
    template = env.get_template("t", globals={"shadow": "template", "own": 1})
    namespace = {"x": 1, "range": "mine", "lead": {"a": 1}}
    ours, theirs = _new_context(template, namespace), template.new_context(namespace)
    assert list(ours.parent.items()) == list(theirs.parent.items())  # the same keys in the same order, the same values
    assert ours.globals_keys == theirs.globals_keys
    assert (ours.name, ours.blocks, ours.vars, ours.exported_vars) == (
        theirs.name, theirs.blocks, theirs.vars, theirs.exported_vars)
    assert env.render(template, namespace) == template.render(namespace) == "1 mine template"


def test_a_context_key_that_is_not_a_string_fails_as_before() -> None:
    env = BudgetedSandbox(loader=DictLoader({"t": "x"}))
    template = env.get_template("t")
    with pytest.raises(TypeError) as expected:
        template.new_context({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError) as got:
        _new_context(template, {1: "x"})  # type: ignore[dict-item]
    assert str(got.value) == str(expected.value)


def _clean_subject_reference(subject: str) -> str:
    collapsed = " ".join(subject.split())
    return "".join(ch for ch in collapsed if unicodedata.category(ch) != "Cc")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", "\x1b", "\x7f", "\x85", "\x9f",
                                                                         "\u200b", "\u2028", " ", "\t"])))
def test_a_clean_subject_drops_control_characters_only(subject: str) -> None:
    assert _clean_subject(subject) == _clean_subject_reference(subject)


def test_a_rendered_subject_loses_its_control_characters(tmp_path: Path) -> None:
    (tmp_path / "t.html.j2").write_text("<p>{{ lead.first_name }}</p>")
    renderer = EmailRenderer(tmp_path)
    links = LinkBuilder("https://t.example", Signer("s"), "1")
    lead = {"first_name": "Da\x1bna\x85\u200b"}
    email = renderer.render("t.html.j2", "Hi {{ lead.first_name }}\x07 \u00a0there", {"lead": lead}, links)
    assert email.subject == "Hi Dana \u200b there"  # NEL and no-break space are whitespace, ZWSP is not


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "\ue000", "\ue001", "0", "1", "2", "12", "٣", "{", "}", "\n"]), max_size=40)
       .map("".join), st.lists(st.sampled_from(["x", "", "<b>", "\\1", "\ue0000\ue001"]), max_size=4))
def test_filling_the_markers_is_the_regex_substitution(text: str, values: list[str]) -> None:
    def by_regex() -> str:
        return _MARKER.sub(lambda m: values[int(m.group(1))], text)

    try:
        expected: object = by_regex()
    except IndexError as exc:
        expected = ("IndexError", str(exc))
    try:
        got: object = _fill_markers(_split_markers(text), values)
    except IndexError as exc:
        got = ("IndexError", str(exc))
    assert got == expected


class _Helpers:
    def plain(self, value: str = "x") -> str:
        return f"<{value}>"

    def stops(self) -> str:
        raise StopIteration

    def fails(self) -> str:
        raise ValueError("no")

    @pass_context
    def with_context(self, context: Any, value: str) -> str:
        return f"{context.name}:{value}"

    @unsafe
    def dangerous(self) -> str:
        return "ran"

    def alters(self) -> str:
        return "altered"

    alters.alters_data = True  # type: ignore[attr-defined]


class _Text(str):
    def shout(self) -> str:
        return self.upper()


def _outcome(action: Any) -> object:
    try:
        result = action()
    except Exception as exc:  # noqa: BLE001 - the outcome compared, whatever it is
        return ("raised", type(exc), str(exc))
    return ("undefined", result._undefined_hint) if isinstance(result, Undefined) else ("value", result)


@pytest.mark.parametrize("name", ["plain", "stops", "fails", "with_context", "dangerous", "alters"])
def test_a_method_is_called_as_the_sandbox_calls_it(name: str) -> None:
    env = BudgetedSandbox(loader=DictLoader({"t": "x"}))
    context = env.get_template("t").new_context({})
    method = getattr(_Helpers(), name)
    args = ("v",) if name in ("plain", "with_context") else ()
    ours = _outcome(lambda: env.call(context, method, *args, _block_vars={}))
    theirs = _outcome(lambda: ImmutableSandboxedEnvironment.call(env, context, method, *args, _block_vars={}))
    assert ours == theirs


def test_methods_through_templates_render_as_before(tmp_path: Path) -> None:
    source = ("{{ h.plain('a') }} {{ h.with_context('b') }} {% set c = cycler('x', 'y') %}{{ c.next() }}{{ c.next() }}"
              " {{ t.shout() }} {{ t.center(5) }}")
    env = BudgetedSandbox(loader=DictLoader({"t": source}))
    reference = ImmutableSandboxedEnvironment(loader=DictLoader({"t": source}))
    namespace = {"h": _Helpers(), "t": _Text("ab")}
    assert env.get_template("t").render(namespace) == reference.get_template("t").render(namespace)
    with pytest.raises(SecurityError):
        env.from_string("{{ h.dangerous() }}").render(namespace)
