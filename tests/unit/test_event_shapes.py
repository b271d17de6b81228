"""``POST /v1/events`` reads event objects of the usual shape by hand: it must read exactly what the pydantic model
reads, and leave every other object (and every error message) to pydantic."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nurture.intake.context import ApiError
from nurture.intake.events import _plain_event, parse_events
from nurture.intake.schemas import EventBody, describe_errors

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 10),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))
VALUES = st.one_of(JSON_SCALARS, st.text(min_size=195, max_size=205), st.lists(JSON_SCALARS, max_size=2),
                   st.dictionaries(st.text(max_size=3), JSON_SCALARS, max_size=2),
                   st.sampled_from(["2024-05-01T09:30:00Z", "2024-05-01T09:30:00", "1714555800", "a@b.example"]))
KEYS = st.sampled_from(["id", "email", "type", "occurred_at", "properties", "extra", "Email"])
OBJECTS = st.one_of(st.dictionaries(KEYS, VALUES, max_size=6), JSON_SCALARS, st.lists(JSON_SCALARS, max_size=2))


def pydantic_reading(item: Any) -> Any:
    try:
        return EventBody.model_validate(item).to_event()
    except ValidationError as exc:
        return ("refused", describe_errors(exc))


@settings(max_examples=400, deadline=None)
@given(OBJECTS)
def test_an_object_read_by_hand_is_read_as_pydantic_reads_it(item: Any) -> None:
    event = _plain_event(item)
    if event is not None:
        assert event == pydantic_reading(item)


@pytest.mark.parametrize("item", [
    {"email": "a@b.example", "type": "page_view"},
    {"email": "a@b.example", "type": "page_view", "id": "x-1", "properties": {"url": "/pricing"}},
    {"email": "a@b.example", "type": "page_view", "id": None, "occurred_at": None, "properties": {}},
    {"email": "a@b.example", "type": "page_view", "id": "x" * 200},
])
def test_the_usual_shapes_are_read_by_hand(item: dict[str, Any]) -> None:
    event = _plain_event(item)
    assert event is not None and event == pydantic_reading(item)


@pytest.mark.parametrize("item", [
    {"email": "a@b.example", "type": "page_view", "occurred_at": "2024-05-01T09:30:00Z"},  # times: pydantic parses
    {"email": "a@b.example", "type": "page_view", "id": "x" * 201},
    {"email": "a@b.example", "type": "page_view", "id": 7},
    {"email": "a@b.example", "type": "page_view", "properties": None},
    {"email": "a@b.example", "type": "page_view", "extra": 1},
    {"email": 5, "type": "page_view"},
    {"type": "page_view"},
])
def test_other_objects_are_left_to_pydantic(item: dict[str, Any]) -> None:
    assert _plain_event(item) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(OBJECTS, min_size=1, max_size=4))
def test_a_batch_gets_pydantic_s_events_or_its_messages(items: list[Any]) -> None:
    readings = [pydantic_reading(item) for item in items]
    refused = [i for i, reading in enumerate(readings) if isinstance(reading, tuple)]
    if refused:
        with pytest.raises(ApiError) as raised:
            parse_events({"events": items})
        expected = "; ".join(describe_errors(_validation_error(items[i]), f"events[{i}]") for i in refused[:20])
        assert raised.value.status == 422 and raised.value.message == expected
    else:
        assert parse_events({"events": items}) == (readings, True)


def _validation_error(item: Any) -> ValidationError:
    try:
        EventBody.model_validate(item)
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")
