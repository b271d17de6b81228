"""Hostile and odd JSON on every route that reads a JSON body, over a real uvicorn server: numbers JSON cannot carry
(a 5,000-digit integer, whole numbers beyond 64 bits, NaN, Infinity, floats beyond a double), text that is not text
(unpaired surrogates, NUL characters), nesting too deep. Each is a 400 with ``{"error": ...}`` naming the problem, and
writes nothing; none is a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from db_fixtures import migrated_url, postgres_available, postgres_template  # noqa: F401
from http_server import HttpServer
from intake_world import add_delivery, events_of, load_world, write_campaigns
from test_http_api import API_KEY, Intake, _serve, nothing_written

from nurture.intake import create_app
from nurture.intake.context import MAX_JSON_DEPTH
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import make_engine

SENDGRID = f"/v1/webhooks/sendgrid?token={API_KEY}"

# Each route that reads JSON, with a body in which ``%s`` is where the hostile value goes (a property, a custom
# field, a text field, an item of SendGrid's array).
ROUTES = {
    "event": ("/v1/events", '{"email": "a@example.com", "type": "page_view", "properties": {"x": %s}}'),
    "batch": ("/v1/events", '{"events": [{"email": "a@example.com", "type": "page_view", "properties": {"x": %s}}]}'),
    "lead": ("/v1/leads", '{"email": "a@example.com", "plan": %s}'),
    "lead-field": ("/v1/leads", '{"email": "a@example.com", "first_name": %s}'),
    "feedback": ("/v1/sales/feedback", '{"email": "a@example.com", "verdict": "accept", "note": %s}'),
    "bounce": ("/v1/webhooks/bounces", '{"type": "bounce", "email": "a@example.com", "reason": %s}'),
    "bounces": ("/v1/webhooks/bounces", '[{"type": "bounce", "email": "a@example.com", "reason": %s}]'),
    "sendgrid": (SENDGRID, '[{"event": "bounce", "email": "a@example.com", "reason": %s}]'),
}

# The hostile value and words the error must hold.
VALUES = {
    "5000-digit integer": ("9" * 5000, "too large"),
    "negative 5000-digit integer": ("-" + "9" * 5000, "too large"),
    "integer beyond 64 bits": ("123456789012345678901234567890", "beyond 64 bits"),
    "integer just below -2^63": (str(-(2**63) - 1), "beyond 64 bits"),
    "NaN": ("NaN", "NaN, which is not a JSON number"),
    "Infinity": ("Infinity", "Infinity, which is not a JSON number"),
    "-Infinity": ("-Infinity", "Infinity, which is not a JSON number"),
    "float beyond a double": ("1e400", "too large for a 64-bit float"),
    "unpaired high surrogate": (r'"a\ud800"', "unpaired surrogate"),
    "unpaired low surrogate": (r'"\udc00b"', "unpaired surrogate"),
    "nesting too deep": ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH, f"more than {MAX_JSON_DEPTH} levels"),
    "nesting past the parser's limit": ("[" * 5000 + "]" * 5000, f"more than {MAX_JSON_DEPTH} levels"),
    "objects nested too deep": ('{"a": ' * 600 + "1" + "}" * 600, f"more than {MAX_JSON_DEPTH} levels"),
}


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Intake]:
    yield from _serve(tmp_path_factory.mktemp("hostile"), API_KEY)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Intake]:
    """An intake of its own, for a test that writes (the module's intake must stay empty)."""
    yield from _serve(tmp_path, API_KEY)


def _post(intake: Intake, path: str, raw: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if not path.startswith("/v1/webhooks/sendgrid"):
        headers["Authorization"] = f"Bearer {API_KEY}"
    return httpx.post(intake.url + path, content=raw, headers=headers, timeout=30)


@pytest.mark.parametrize("value_name", list(VALUES))
@pytest.mark.parametrize("route", list(ROUTES))
def test_a_hostile_json_value_is_400_with_a_message_and_writes_nothing(intake, route, value_name):
    path, template = ROUTES[route]
    value, words = VALUES[value_name]
    response = _post(intake, path, (template % value).encode())

    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert words in response.json()["error"]
    assert nothing_written(intake.engine)


@pytest.mark.parametrize("route", [name for name in ROUTES if name != "sendgrid"])
def test_a_nul_character_is_400_on_the_api_routes(intake, route):
    path, template = ROUTES[route]
    response = _post(intake, path, (template % r'"a\u0000b"').encode())
    assert response.status_code == 400, response.text
    assert "NUL" in response.json()["error"]
    assert nothing_written(intake.engine)


def test_depth_up_to_the_limit_whole_numbers_up_to_64_bits_and_escaped_backslashes_are_accepted(fresh):
    intake = fresh
    nested = "[" * (MAX_JSON_DEPTH - 2) + "]" * (MAX_JSON_DEPTH - 2)  # with the body and properties: the limit exactly
    body = ('{"email": "ok@example.com", "type": "page_view", "properties": {"x": ' + nested
            + f', "big": {2**64 - 1}, "small": {-(2**63)}, "float": 1e300, "text": "\\\\u0000 is six characters"}}}}')
    response = _post(intake, "/v1/events", body.encode())
    assert response.status_code == 202, response.text
    (event,) = events_of(intake.engine, "ok@example.com")
    properties = event.properties if isinstance(event.properties, dict) else json.loads(event.properties)
    assert properties["big"] == 2**64 - 1 and properties["small"] == -(2**63)  # exact, not rounded to a float
    assert properties["text"] == "\\u0000 is six characters"


def test_sendgrid_keeps_a_batch_whose_items_hold_nul_characters(fresh):
    intake = fresh
    add_delivery(intake.engine, "nul@example.com")
    items = (rb'[{"event": "bounce", "email": "nul@example.com", "reason": "550 \u0000gone", "sg_event_id": "e\u00001",'
             rb' "sg_message_id": "x\u0000y.filter1"}, {"event": "bounce", "email": "a\u0000@example.com"}]')
    response = _post(intake, SENDGRID, items)
    assert response.status_code == 200, response.text
    assert response.json() == {"recorded": 1, "duplicate": 0, "ignored": 1}  # the lead is suppressed; no address, no event
    (event,) = events_of(intake.engine, "nul@example.com")[-1:]
    assert event.type == "bounce"


# --- NUL characters in look-ups: PostgreSQL refuses them in any query, so they must never reach one ---------------


@pytest.fixture
def any_backend_intake(migrated_url: str, tmp_path: Path) -> Iterator[str]:
    engine = make_engine(migrated_url)
    catalog, rules = load_world(write_campaigns(tmp_path / "campaigns"))
    app = create_app(Settings(_env_file=None, api_key=API_KEY, database_url=migrated_url), engine=engine,
                     catalog=catalog, rules=rules, signer=Signer("s3cret"))
    with HttpServer(app) as server:
        yield server.url
    app.state.intake.close()
    engine.dispose()


@pytest.mark.parametrize(("method", "path", "raw", "status"), [
    ("POST", "/v1/sales/feedback", rb'{"email": "a\u0000@example.com", "verdict": "accept"}', 400),
    ("POST", "/v1/webhooks/bounces", rb'{"type": "bounce", "message_id": "<a\u0000@example.com>"}', 400),
    ("POST", SENDGRID, rb'[{"event": "bounce", "sg_message_id": "a\u0000b.filter1"}]', 200),
    ("GET", "/v1/leads/a%00@example.com", b"", 404),
])
def test_a_nul_character_never_reaches_a_database_query(any_backend_intake, method, path, raw, status):
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    response = httpx.request(method, any_backend_intake + path, content=raw or None, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    if status >= 400:
        assert response.json()["error"]
    else:
        assert response.json() == {"recorded": 0, "duplicate": 0, "ignored": 1}


def test_occurred_at_may_be_unix_seconds_as_the_openapi_document_says(fresh):
    response = _post(fresh, "/v1/events", b'{"email": "unix@example.com", "type": "page_view", "occurred_at": 1714564800}')
    assert response.status_code == 202, response.text
    (event,) = events_of(fresh.engine, "unix@example.com")
    assert event.occurred_at.replace(tzinfo=None).isoformat() == "2024-05-01T12:00:00"


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_utf8_byte_order_mark_before_the_body_is_skipped(fresh, route):
    """The body is read as it would be without the mark: feedback on a lead that is no SQL is the 409 it always is."""
    path, template = ROUTES[route]
    add_delivery(fresh.engine, "a@example.com")
    response = _post(fresh, path, b"\xef\xbb\xbf" + (template % '"fine"').encode())
    if route == "feedback":
        assert response.status_code == 409 and "not an SQL" in response.json()["error"], response.text
    else:
        assert response.status_code in (200, 201, 202), response.text
    if route in ("event", "batch"):
        (event,) = events_of(fresh.engine, "a@example.com")
        properties = event.properties if isinstance(event.properties, dict) else json.loads(event.properties)
        assert properties == {"x": "fine"}


@pytest.mark.parametrize(("raw", "words"), [
    pytest.param(b"\xef\xbb\xbf", "the request body is empty", id="only-a-byte-order-mark"),
    pytest.param(b"\xef\xbb\xbf\xef\xbb\xbf{}", "not valid JSON", id="two-byte-order-marks"),
    pytest.param(b"\xef\xbb{}", "not UTF-8 text", id="a-broken-byte-order-mark"),
])
def test_a_body_that_is_only_a_byte_order_mark_or_two_is_400(intake, raw, words):
    response = _post(intake, "/v1/events", raw)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]
    assert nothing_written(intake.engine)
