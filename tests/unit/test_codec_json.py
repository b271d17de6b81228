"""storage.codec.json_value reads a JSON column's text as json.loads does, whichever parser answers; so does
json_bytes_value the bytes psycopg hands its JSON loader on PostgreSQL."""

from __future__ import annotations

import json
import math

import pytest

from nurture.storage.codec import json_bytes_value, json_value, list_text

TEXTS = ['{"a": 1, "b": [1, 2.5, -0.0, 1e-300, 1.7976931348623157e308, null, true, false]}', "[]", "{}", '""',
         '"\\u00e9\\ud83c\\udf89 \\n\\t\\\\ \\""', "123456789012345678901234567890", "-123456789012345678901234567890",
         "18446744073709551615", "-9223372036854775808", "NaN", "[Infinity, -Infinity]", '"\\ud800"', "1e400",
         '{"a": 1, "a": 2}', " [1] ", "0.1", "-0", "1E5", '{"nested": ' * 50 + "1" + "}" * 50,
         '["\u00e9 \u0663", 12345678901234567890, 1234567890123456789.5]', '"\ud800 raw"',
         '[1, 1796627586075004, 2592000.0, ["page_view", 4.999993074898096, 5.0, 5, 1796627582703919]]']


@pytest.mark.parametrize("text", TEXTS)
def test_json_value_reads_as_json_loads(text):
    mine, theirs = json_value(text), json.loads(text)
    assert repr(mine) == repr(theirs)
    assert json.dumps(mine) == json.dumps(theirs)


@pytest.mark.parametrize("text", TEXTS)
def test_json_bytes_value_reads_as_json_loads(text):
    data = text.encode("utf-8", "surrogatepass")  # as json.loads decodes bytes; PostgreSQL sends valid UTF-8 only
    mine, theirs = json_bytes_value(data), json.loads(data)
    assert repr(mine) == repr(theirs)
    assert json.dumps(mine) == json.dumps(theirs)
    assert repr(json_bytes_value(text)) == repr(theirs)  # a text, should a driver hand one, reads the same


def test_json_value_of_null_is_none():
    assert json_value(None) is None
    assert json_bytes_value(None) is None


def test_json_value_refuses_what_json_loads_refuses():
    with pytest.raises(ValueError):
        json_value("{not json")
    with pytest.raises(ValueError):
        json_bytes_value(b"{not json")
    assert math.isnan(json_value("NaN"))


@pytest.mark.parametrize("value", [{}, [], {"a": 1}, [1, "é"], "", 0, False])
def test_json_text_writes_as_json_dumps(value):
    from nurture.storage.codec import json_text

    assert json_text(value) == json.dumps(value)
    assert json_text(None) is None


def test_empty_containers_are_new_objects_each_time():
    first, second = json_value("[]"), json_value("[]")
    first.append(1)
    assert second == [] and json_value("[]") == [] and first is not second
    mapping = json_value("{}")
    mapping["a"] = 1
    assert json_value("{}") == {}


@pytest.mark.parametrize("value", [
    [], [1, 1796617060123456, 2592000.0, 739000, ["page_view", 3.25, 4.0, 4, 1796617060123456], ["x", 739001, 2]],
    [1, 2, None, ["a", 0.1 + 0.2, -0.0, 5e-324, 1e16, 2**64]], ["é\"\\\n\u2028🎉\ud800", [[[]]]],
    [float("nan"), float("inf"), -float("inf"), True, False, {"k": [1, {"z": None}], "a": 1}],
])
def test_list_text_writes_as_json_dumps(value):
    assert list_text(value) == json.dumps(value)
