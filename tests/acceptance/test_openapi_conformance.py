"""The OpenAPI document against the running intake: schemathesis generates requests from the document (valid ones
and ones that break it) for every documented route, sends them to a real uvicorn server, and runs all of its checks
on the answers: no server error, no status code the document does not list, every answer of the documented content
type and schema, schema-breaking requests refused, ``Allow`` on a 405, authentication enforced.

Two of the checks' expectations are widened, each for a reason of the API's and not of the document's:

- a request the schema allows may still be refused with 422: the document states shapes and bounds, the server also
  checks meaning (a known time zone, a time at most a day ahead, a configured reject reason, a lead's email or a
  message id), as the 422 of each route says; or with 400 when it holds what no JSON body may (a NUL character, a
  whole number beyond 64 bits: free-form values such as properties cannot say so in the schema), as each 400 says;
- a request the schema refuses may be answered 413: too many SendGrid events is "too large", as documented.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from http_server import HttpServer
from hypothesis import HealthCheck, settings
from intake_world import load_world, write_campaigns

from nurture.intake import create_app
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import make_engine
from nurture.storage.migrate import upgrade

API_KEY = "conformance-key-0123456789"
BASIC = "Basic " + base64.b64encode(f"sendgrid:{API_KEY}".encode()).decode()
EXAMPLES = 300
"""Examples per route for the fuzzing phase (the coverage phase adds its boundary cases)."""

CONFIG = schemathesis.Config.from_dict({
    "suppress-health-check": ["all"],
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "422"]},
        "negative_data_rejection": {
            "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422"]},
    },
})


class _Served:
    """The app on a real uvicorn server, started on first use and stopped at the end of the session."""

    server: HttpServer | None = None
    app: Any = None

    @classmethod
    def app_for_schema(cls) -> Any:
        if cls.app is None:
            folder = Path(tempfile.mkdtemp(prefix="nurture-openapi-"))
            url = f"sqlite:///{folder / 'conformance.db'}"
            upgrade(url)
            engine = make_engine(url, busy_timeout=5)
            catalog, rules = load_world(write_campaigns(folder / "campaigns"))
            cls.app = create_app(Settings(_env_file=None, api_key=API_KEY, database_url=url), engine=engine,
                                 catalog=catalog, rules=rules, signer=Signer("s3cret"))
        return cls.app


schema = schemathesis.openapi.from_dict(_Served.app_for_schema().openapi(), config=CONFIG)


@pytest.fixture(scope="module")
def server() -> Iterator[HttpServer]:
    with HttpServer(_Served.app_for_schema()) as running:
        yield running
    _Served.app.state.intake.close()


@pytest.mark.slow  # about a minute: left out of the default run; `pytest -m slow -n 0` (and CI) runs it
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_route_answers_as_its_openapi_document_says(case, server):
    # schemathesis gives every route's test one test id, and pytest-xdist runs one test per id: run in one process
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.fail("pytest-xdist would run one route of this test: run the slow suites with `pytest -m slow -n 0`")
    auth = BASIC if case.path.startswith("/v1/webhooks/sendgrid") else f"Bearer {API_KEY}"
    case.call_and_validate(base_url=server.url, headers={"Authorization": auth})


def test_the_document_names_every_error_with_its_schema_and_the_bounce_body():
    document = _Served.app_for_schema().openapi()
    error = {"$ref": "#/components/schemas/ErrorBody"}
    expected = {
        ("/v1/events", "post"): {"400", "401", "413", "422", "503"},
        ("/v1/leads", "post"): {"400", "401", "413", "422", "503"},
        ("/v1/leads/{email}", "get"): {"401", "404", "503"},
        ("/v1/sales/feedback", "post"): {"400", "401", "404", "409", "413", "422", "503"},
        ("/v1/webhooks/bounces", "post"): {"400", "401", "413", "422", "503"},
        ("/v1/webhooks/sendgrid", "post"): {"400", "401", "413", "422", "503"},
        ("/t/o/{token}.gif", "get"): {"404"},
        ("/t/c/{token}", "get"): {"404"},
    }
    for (path, method), codes in expected.items():
        responses = document["paths"][path][method]["responses"]
        assert codes <= set(responses), (path, sorted(responses))
        for code in codes:
            assert responses[code]["content"]["application/json"]["schema"] == error, (path, code)
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    bounce = document["components"]["schemas"]["BounceNotice"]
    assert bounce["properties"]["type"]["enum"] == ["bounce", "soft_bounce", "spam_complaint"]
    assert bounce["properties"]["reason"]["anyOf"][0]["maxLength"] == 2000
    body = document["paths"]["/v1/webhooks/bounces"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][1]["maxItems"] == 1000
    event = document["components"]["schemas"]["EventBody"]["properties"]
    assert event["email"]["maxLength"] == 254 and event["email"]["minLength"] == 1 and "pattern" in event["email"]
    assert event["type"]["pattern"] == "^[a-z][a-z0-9_.-]{0,63}$"
