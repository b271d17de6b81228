"""The outbox against real parts: a real HTTP receiver (uvicorn) over a real httpx client, real SQLite files and
PostgreSQL databases, a real SMTP sink, and the documented verification recipes (Python and openssl) run as written.

The clock is injected: a retry is provoked by running the processor at a later ``now``, never by sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from db_fixtures import engine, migrated_url, postgres_available, postgres_template, sqlite_engine  # noqa: F401
from smtp_sink import SmtpSink
from sqlalchemy import select
from sqlalchemy.engine import Engine
from webhook_receiver import ReceivedRequest, WebhookReceiver

from nurture import __version__
from nurture.delivery.message import message_id_for
from nurture.delivery.smtp import SMTPTransport
from nurture.delivery.webhooks import (
    WebhookSender,
    encode_body,
    event_id_for,
    is_slack_url,
    make_client,
    sign,
    signature_header,
    slack_message,
    verify,
)
from nurture.storage import outbox as outbox_store
from nurture.storage.database import transaction
from nurture.storage.tables import O
from nurture.worker.outbox_jobs import OutboxConfig, OutboxProcessor, backoff

NOW = datetime(2026, 3, 9, 9, 0, tzinfo=timezone.utc)
T = int(NOW.timestamp())
SECRET = "whsec_test_5f2b"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"

PROMOTED = {
    "type": "lead.promoted",
    "lead": {"email": "ada@example.org", "first_name": "Ada", "last_name": "Lovelace", "company": "Analytical Engines",
             "title": "VP Engineering", "stage": "sql", "score": 87, "owner": "grace@acme.test"},
    "brief": {"why": ["Requested a demo", "Visited pricing 3 times"], "score": 87},
    "owner": {"email": "grace@acme.test", "slack_id": "U024BE7LH"},
    "links": {"accept": "https://nurture.acme.test/sales/accept?token=a",
              "reject": "https://nurture.acme.test/sales/reject?token=r"},
}


# -- fixtures and helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def receiver(receiver_server: WebhookReceiver) -> WebhookReceiver:
    """The module's receiver, up, with nothing received and no instructions left from an earlier test."""
    return receiver_server.reset()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with make_client() as http:
        yield http


def make_processor(engine: Engine, client: httpx.Client, url: str = "", *, mail: Any = None,
                   timeout: httpx.Timeout | None = None, **config: Any) -> OutboxProcessor:
    sender = WebhookSender(client, secret=SECRET, **({"timeout": timeout} if timeout else {}))
    return OutboxProcessor(engine, sender=sender, mail=mail, from_address="Acme Sales <sales@acme.test>",
                           sales_webhook_url=url, config=OutboxConfig(**config))


def enqueue(engine: Engine, kind: str, key: str, payload: dict[str, Any], now: datetime = NOW) -> bool:
    with transaction(engine) as conn:
        return outbox_store.enqueue(conn, kind=kind, dedup_key=key, payload=payload, now=now)


def rows(engine: Engine) -> dict[str, Any]:
    with transaction(engine, read_only=True) as conn:
        return {row.dedup_key: row for row in conn.execute(select(O).order_by(O.c.id))}


def signed_at(request: ReceivedRequest) -> int:
    return int(re.fullmatch(r"t=(\d+),v1=[0-9a-f]{64}", request.headers["nurture-signature"]).group(1))


def assert_authentic(request: ReceivedRequest) -> None:
    """What a receiver does: the signature over the raw body, at the time it was signed."""
    assert verify(SECRET, request.headers["nurture-signature"], request.body, now=signed_at(request))


def docs_block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) == 1, f"docs/webhooks.md should have exactly one {language} block"
    return blocks[0]


def documented_verify():
    namespace: dict[str, Any] = {}
    exec(compile(docs_block("python"), str(DOCS), "exec"), namespace)  # the recipe exactly as documented
    return namespace["verify_nurture_signature"]


# -- signing ----------------------------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_raw_body() -> None:
    body = b'{"id":"e1","type":"lead.promoted"}'
    expected = hmac.new(SECRET.encode(), b"1773046800." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1773046800, body) == expected
    assert signature_header(SECRET, 1773046800, body) == f"t=1773046800,v1={expected}"


BODY = '{"id":"e1","lead":{"email":"zoë@example.org"}}'.encode()
GOOD = signature_header(SECRET, T, BODY)
VERIFY_CASES = [
    ("valid", SECRET, GOOD, BODY, T, True),
    ("valid 300 s later", SECRET, GOOD, BODY, T + 300, True),
    ("clock 300 s behind", SECRET, GOOD, BODY, T - 300, True),
    ("tampered body", SECRET, GOOD, BODY.replace(b"e1", b"e2"), T, False),
    ("body re-serialised", SECRET, GOOD, json.dumps(json.loads(BODY)).encode(), T, False),
    ("wrong secret", "whsec_other", GOOD, BODY, T, False),
    ("old timestamp", SECRET, GOOD, BODY, T + 301, False),
    ("future timestamp", SECRET, GOOD, BODY, T - 301, False),
    ("re-dated header", SECRET, GOOD.replace(f"t={T}", f"t={T + 60}"), BODY, T + 60, False),
    ("rotated secret, second v1", SECRET, f"t={T},v1={sign('old', T, BODY)},v1={sign(SECRET, T, BODY)}", BODY, T, True),
    ("spaces after commas", SECRET, f"t={T}, v1={sign(SECRET, T, BODY)}", BODY, T, True),
    ("no v1", SECRET, f"t={T}", BODY, T, False),
    ("no timestamp", SECRET, f"v1={sign(SECRET, T, BODY)}", BODY, T, False),
    ("two timestamps", SECRET, f"t={T},t={T},v1={sign(SECRET, T, BODY)}", BODY, T, False),
    ("non-numeric timestamp", SECRET, f"t=-{T},v1={sign(SECRET, T, BODY)}", BODY, T, False),
    ("unicode digits", SECRET, f"t=١٢,v1={sign(SECRET, 12, BODY)}", BODY, 12, False),
    ("empty header", SECRET, "", BODY, T, False),
    ("garbage", SECRET, "sha256=abc", BODY, T, False),
]


@pytest.mark.parametrize(("secret", "header", "body", "now", "expected"), [c[1:] for c in VERIFY_CASES],
                         ids=[c[0] for c in VERIFY_CASES])
def test_verify_and_the_documented_recipe_agree(
    secret: str, header: str, body: bytes, now: int, expected: bool
) -> None:
    assert verify(secret, header, body, now=now) is expected
    assert documented_verify()(secret, header, body, now=now) is expected


def test_documented_recipe_uses_the_clock_by_default() -> None:
    recipe = documented_verify()
    fresh = int(time.time())
    assert recipe(SECRET, signature_header(SECRET, fresh, BODY), BODY)
    assert not recipe(SECRET, signature_header(SECRET, fresh - 3600, BODY), BODY)


# -- one delivery over real HTTP ----------------------------------------------------------------------------------


def test_delivery_is_signed_compact_json_with_event_headers(receiver: WebhookReceiver, client: httpx.Client) -> None:
    payload = {"id": "evt-1", "type": "lead.promoted", "lead": {"email": "zoë@example.org", "score": 87}}
    result = WebhookSender(client, secret=SECRET).deliver(receiver.url, "evt-1", "lead.promoted", payload, now=NOW)

    assert (result.ok, result.status_code, result.permanent) == (True, 200, False)
    [request] = receiver.wait_for(1)
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.body == json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"nurture/{__version__}"
    assert request.headers["nurture-event-id"] == "evt-1"
    assert request.headers["nurture-event-type"] == "lead.promoted"
    assert signed_at(request) == T
    assert verify(SECRET, request.headers["nurture-signature"], request.body, now=T + 10)
    assert documented_verify()(SECRET, request.headers["nurture-signature"], request.body, now=T + 10)
    assert not verify(SECRET, request.headers["nurture-signature"], request.body + b" ", now=T)
    assert not verify(SECRET, request.headers["nurture-signature"], request.body, now=T + 301)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_documented_openssl_one_liner_checks_a_received_request(
    receiver: WebhookReceiver, client: httpx.Client, tmp_path: Path
) -> None:
    WebhookSender(client, secret=SECRET).deliver(receiver.url, "evt-2", "lead.promoted", PROMOTED, now=NOW)
    [request] = receiver.wait_for(1)
    (tmp_path / "body.json").write_bytes(request.body)

    def run(secret: str) -> str:
        env = {"PATH": "/usr/bin:/bin", "SIG": request.headers["nurture-signature"], "NURTURE_WEBHOOK_SECRET": secret}
        done = subprocess.run(["bash", "-c", docs_block("sh")], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=10, check=True)
        return done.stdout.strip()

    assert run(SECRET) == "signature ok"
    assert run("whsec_other") == "signature MISMATCH"
    (tmp_path / "body.json").write_bytes(request.body.replace(b"Ada", b"Eve"))
    assert run(SECRET) == "signature MISMATCH"


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(500, False), (502, False), (503, False), (408, False), (409, False), (425, False), (429, False),
     (400, True), (401, True), (403, True), (404, True), (410, True), (422, True), (301, True)],
)
def test_error_answers_are_temporary_or_permanent(
    receiver: WebhookReceiver, client: httpx.Client, status: int, permanent: bool
) -> None:
    receiver.fail_next(1, status=status, body=b"no_service")
    result = WebhookSender(client, secret=SECRET).deliver(receiver.url, "e", "t", {}, now=NOW)
    assert (result.ok, result.status_code, result.permanent) == (False, status, permanent)
    assert result.error is not None and result.error.startswith(f"HTTP {status}")
    if not 300 <= status < 400:
        assert "no_service" in result.error  # Slack explains its refusals in the body


def test_receiver_down_is_a_temporary_connection_error(receiver: WebhookReceiver, client: httpx.Client) -> None:
    receiver.down()
    url = receiver.url + "/T0/B0/s3cr3tpath"
    result = WebhookSender(client, secret=SECRET).deliver(url, "e", "t", {}, now=NOW)
    assert (result.ok, result.status_code, result.permanent) == (False, None, False)
    assert "ConnectError" in (result.error or "") and "s3cr3tpath" not in (result.error or "")


def test_receiver_that_does_not_answer_times_out_as_temporary(receiver: WebhookReceiver, client: httpx.Client) -> None:
    receiver.hold_next(1)
    sender = WebhookSender(client, secret=SECRET, timeout=httpx.Timeout(0.3))
    result = sender.deliver(receiver.url, "e", "t", {}, now=NOW)
    receiver.release()
    assert (result.ok, result.permanent) == (False, False)
    assert (result.error or "").startswith("timed out")
    assert receiver.wait_for(1)[0].answered is None


def test_retry_after_of_a_429_is_reported(receiver: WebhookReceiver, client: httpx.Client) -> None:
    receiver.fail_next(1, status=429, headers={"Retry-After": "120"})
    result = WebhookSender(client, secret=SECRET).deliver(receiver.url, "e", "t", {}, now=NOW)
    assert (result.permanent, result.retry_after) == (False, 120.0)


def test_unsupported_url_is_permanent(client: httpx.Client) -> None:
    result = WebhookSender(client, secret=SECRET).deliver("ftp://files.acme.test/x", "e", "t", {}, now=NOW)
    assert (result.ok, result.permanent) == (False, True)


def test_without_a_secret_nothing_is_sent_unsigned_and_it_waits(
    receiver: WebhookReceiver, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    sender = WebhookSender(client, secret="")
    with caplog.at_level(logging.WARNING, logger="nurture"):
        first = sender.deliver(receiver.url, "e", "t", {}, now=NOW)
        second = sender.deliver(receiver.url, "e", "t", {}, now=NOW)
    assert (first.ok, first.permanent, second.ok) == (False, False, False)  # temporary: retried once a secret is set
    assert "NURTURE_WEBHOOK_SECRET" in (first.error or "")
    assert caplog.text.count("NURTURE_WEBHOOK_SECRET") == 1  # warned once
    assert receiver.requests == []


# -- storage ------------------------------------------------------------------------------------------------------


def test_dedup_key_prevents_a_second_enqueue(engine: Engine) -> None:
    assert enqueue(engine, "sales_webhook", "promoted:7:2026-03-09", {"type": "lead.promoted", "n": 1}) is True
    assert enqueue(engine, "sales_webhook", "promoted:7:2026-03-09", {"type": "lead.promoted", "n": 2}) is False
    [row] = rows(engine).values()
    assert (row.kind, row.status, row.attempts, row.payload["n"]) == ("sales_webhook", "pending", 0, 1)
    assert row.next_attempt_at == NOW
    assert outbox_store.pending_count(engine) == 1


def test_a_rolled_back_decision_queues_nothing(engine: Engine) -> None:
    with pytest.raises(RuntimeError), transaction(engine) as conn:
        outbox_store.enqueue(conn, kind="sales_webhook", dedup_key="k", payload={}, now=NOW)
        raise RuntimeError("the decision failed")
    assert rows(engine) == {}


def test_claim_takes_due_unleased_rows_and_leases_them(engine: Engine) -> None:
    enqueue(engine, "sales_webhook", "due", {})
    enqueue(engine, "sales_webhook", "later", {}, now=NOW + timedelta(minutes=1))
    lease = timedelta(minutes=5)

    [claimed] = outbox_store.claim(engine, NOW, limit=10, lease=lease)
    assert claimed.dedup_key == "due" and claimed.lease_until == NOW + lease
    assert outbox_store.claim(engine, NOW + timedelta(seconds=30), limit=10, lease=lease) == []
    later = NOW + timedelta(minutes=2)
    assert [r.dedup_key for r in outbox_store.claim(engine, later, limit=10, lease=lease)] == ["later"]
    # the first lease expired: claimable again
    after_lease = NOW + lease + timedelta(seconds=1)
    assert [r.dedup_key for r in outbox_store.claim(engine, after_lease, limit=10, lease=lease)] == ["due"]
    assert outbox_store.next_attempt(engine) == NOW


def test_mark_never_reverts_a_row_another_worker_recorded(engine: Engine) -> None:
    enqueue(engine, "sales_webhook", "k", {})
    [row] = outbox_store.claim(engine, NOW, limit=1, lease=timedelta(minutes=5))
    outbox_store.mark(engine, NOW, [outbox_store.OutboxOutcome(row.id, "sent", 1)])
    late = outbox_store.OutboxOutcome(row.id, "pending", 1, "HTTP 500", NOW + timedelta(seconds=10))
    outbox_store.mark(engine, NOW + timedelta(minutes=6), [late])
    row = rows(engine)["k"]
    assert (row.status, row.sent_at, row.last_error, row.lease_until) == ("sent", NOW, None, None)
    assert outbox_store.pending_count(engine) == 0


# -- the processor --------------------------------------------------------------------------------------------------


def test_receiver_down_then_up_delivers_once_after_recovery(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client
) -> None:
    enqueue(sqlite_engine, "sales_webhook", "promoted:1", PROMOTED)
    processor = make_processor(sqlite_engine, client, receiver.url)
    receiver.down()

    report = processor.run(NOW)
    assert (report.claimed, report.sent, report.retried) == (1, 0, 1)
    row = rows(sqlite_engine)["promoted:1"]
    assert (row.status, row.attempts, row.lease_until) == ("pending", 1, None)
    assert row.next_attempt_at == NOW + timedelta(seconds=10)
    assert "ConnectError" in row.last_error
    assert processor.run(NOW + timedelta(seconds=9)).claimed == 0  # not due yet

    receiver.up()
    assert processor.run(NOW + timedelta(seconds=10)).sent == 1
    assert processor.run(NOW + timedelta(days=1)).claimed == 0
    [request] = receiver.wait_for(1)
    assert request.headers["nurture-event-id"] == event_id_for("promoted:1")
    assert signed_at(request) == T + 10
    assert_authentic(request)
    row = rows(sqlite_engine)["promoted:1"]
    assert (row.status, row.attempts, row.sent_at, row.lease_until) == ("sent", 2, NOW + timedelta(seconds=10), None)
    assert outbox_store.pending_count(sqlite_engine) == 0


def test_500s_are_retried_with_growing_backoff_then_delivered_once(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client
) -> None:
    enqueue(sqlite_engine, "sales_webhook", "promoted:2", PROMOTED)
    processor = make_processor(sqlite_engine, client, receiver.url)
    receiver.fail_next(4, status=500)

    now, delays = NOW, []
    while True:
        report = processor.run(now)
        assert report.claimed == 1
        row = rows(sqlite_engine)["promoted:2"]
        if report.sent:
            break
        assert (row.status, row.last_error) == ("pending", "HTTP 500")
        assert processor.run(row.next_attempt_at - timedelta(seconds=1)).claimed == 0
        delays.append((row.next_attempt_at - now).total_seconds())
        now = row.next_attempt_at

    assert delays == [10, 20, 40, 80]
    assert (row.status, row.attempts) == ("sent", 5)
    assert processor.run(now + timedelta(days=1)).claimed == 0
    requests = receiver.wait_for(5)
    assert [r.answered for r in requests] == [500, 500, 500, 500, 200]
    assert {r.headers["nurture-event-id"] for r in requests} == {event_id_for("promoted:2")}
    assert len({r.body for r in requests}) == 1  # the same notification, re-signed each time
    assert [signed_at(r) for r in requests] == [T, T + 10, T + 30, T + 70, T + 150]
    for request in requests:
        assert_authentic(request)


def test_a_worker_crash_between_send_and_mark_redelivers_with_the_same_event_id(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(sqlite_engine, "sales_webhook", "promoted:3", PROMOTED)
    processor = make_processor(sqlite_engine, client, receiver.url, lease=timedelta(minutes=5))

    class Crash(BaseException):
        pass

    def die(*_args: object, **_kwargs: object) -> None:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(outbox_store, "mark", die)
        with pytest.raises(Crash):
            processor.run(NOW)
    assert len(receiver.wait_for(1)) == 1
    row = rows(sqlite_engine)["promoted:3"]
    assert (row.status, row.attempts, row.lease_until) == ("pending", 0, NOW + timedelta(minutes=5))

    assert processor.run(NOW + timedelta(minutes=4)).claimed == 0  # the dead worker's lease still holds
    assert processor.run(NOW + timedelta(minutes=5, seconds=1)).sent == 1
    first, second = receiver.wait_for(2)
    assert first.headers["nurture-event-id"] == second.headers["nurture-event-id"] == event_id_for("promoted:3")
    assert json.loads(first.body)["id"] == json.loads(second.body)["id"] == event_id_for("promoted:3")
    assert first.body == second.body
    assert (signed_at(first), signed_at(second)) == (T, T + 301)
    assert_authentic(first)
    assert_authentic(second)
    assert rows(sqlite_engine)["promoted:3"].status == "sent"


def test_claimed_but_never_marked_rows_are_taken_over_after_the_lease(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client
) -> None:
    enqueue(sqlite_engine, "sales_webhook", "promoted:4", PROMOTED)
    assert len(outbox_store.claim(sqlite_engine, NOW, limit=10, lease=timedelta(minutes=5))) == 1  # then "dies"
    processor = make_processor(sqlite_engine, client, receiver.url)
    assert processor.run(NOW + timedelta(minutes=5)).claimed == 0
    assert processor.run(NOW + timedelta(minutes=5, seconds=1)).sent == 1
    [request] = receiver.wait_for(1)
    assert request.headers["nurture-event-id"] == event_id_for("promoted:4")


def test_sales_body_has_id_type_created_at_and_no_delivery_controls(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client
) -> None:
    enqueue(sqlite_engine, "sales_webhook", "promoted:5", {**PROMOTED, "url": receiver.url + "/crm", "format": "json"})
    processor = make_processor(sqlite_engine, client, "http://127.0.0.1:9/unused")
    assert processor.run(NOW).sent == 1
    [request] = receiver.wait_for(1)
    body = json.loads(request.body)
    assert request.path == "/hook/crm"
    assert body["id"] == event_id_for("promoted:5") and body["type"] == "lead.promoted"
    assert datetime.fromisoformat(body["created_at"]) == NOW
    assert body["lead"] == PROMOTED["lead"] and body["brief"] == PROMOTED["brief"]
    assert "url" not in body and "format" not in body
    assert request.headers["nurture-event-type"] == "lead.promoted"


def test_a_permanent_4xx_keeps_a_sales_notification_at_the_hourly_cap_with_a_warning(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    url = receiver.url + "/services/T0/B0/s3cr3tpath"
    enqueue(sqlite_engine, "sales_webhook", "promoted:6", {**PROMOTED, "url": url, "format": "json"})
    processor = make_processor(sqlite_engine, client, max_attempts=2)
    receiver.fail_next(3, status=404, body=b"no_service")

    now = NOW
    with caplog.at_level(logging.DEBUG, logger="nurture"):
        for attempt in (1, 2, 3):
            assert processor.run(now).retried == 1
            row = rows(sqlite_engine)["promoted:6"]
            assert (row.status, row.attempts, row.next_attempt_at) == ("pending", attempt, now + timedelta(hours=1))
            assert row.last_error == "HTTP 404: no_service"
            now = row.next_attempt_at
    assert processor.run(now).sent == 1  # the configuration was fixed
    assert rows(sqlite_engine)["promoted:6"].status == "sent"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("HTTP 404" in w and "127.0.0.1" in w for w in warnings)
    for leak in ("s3cr3tpath", "ada@example.org", "Lovelace", "no_service"):
        assert leak not in caplog.text


def test_sales_notifications_outlive_max_attempts(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client
) -> None:
    enqueue(sqlite_engine, "sales_webhook", "sla:8", {"type": "lead.sla_overdue", "lead": {"email": "a@b.test"}})
    processor = make_processor(sqlite_engine, client, receiver.url, max_attempts=3,
                               retry_base=timedelta(seconds=10), retry_max=timedelta(seconds=30))
    receiver.down()
    now, delays = NOW, []
    for _ in range(6):
        assert processor.run(now).retried == 1
        row = rows(sqlite_engine)["sla:8"]
        delays.append((row.next_attempt_at - now).total_seconds())
        now = row.next_attempt_at
    assert (row.status, row.attempts) == ("pending", 6)
    assert delays == [10, 20, 30, 30, 30, 30]
    receiver.up()
    assert processor.run(now).sent == 1
    [request] = receiver.wait_for(1)
    assert request.headers["nurture-event-type"] == "lead.sla_overdue"


def test_missing_sales_webhook_url_keeps_the_row_waiting(sqlite_engine: Engine, client: httpx.Client) -> None:
    enqueue(sqlite_engine, "sales_webhook", "promoted:9", PROMOTED)
    report = make_processor(sqlite_engine, client, "").run(NOW)
    assert (report.retried, report.failed) == (1, 0)
    row = rows(sqlite_engine)["promoted:9"]
    assert row.status == "pending" and "NURTURE_SALES_WEBHOOK_URL" in row.last_error


def test_unknown_kinds_are_kept_for_a_newer_worker(sqlite_engine: Engine, client: httpx.Client) -> None:
    enqueue(sqlite_engine, "crm_sync", "crm:1", {})
    report = make_processor(sqlite_engine, client, max_attempts=1).run(NOW)
    assert (report.retried, report.failed) == (1, 0)
    assert rows(sqlite_engine)["crm:1"].status == "pending"


def step_payload(url: str, method: str = "POST") -> dict[str, Any]:
    """The shape Dispatcher._webhook_row queues for a campaign's webhook step."""
    body = {"type": "step.webhook", "campaign": "trial", "step": "notify-crm",
            "lead": {"email": "ada@example.org", "stage": "mql", "score": 42.0}, "list": "hot"}
    return {"url": url, "method": method, "body": body}


def test_step_webhook_sends_its_body_with_its_method(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client
) -> None:
    payload = step_payload(receiver.url + "/crm", "PUT")
    enqueue(sqlite_engine, "step_webhook", "step:12:notify-crm", payload)
    assert make_processor(sqlite_engine, client).run(NOW).sent == 1
    [request] = receiver.wait_for(1)
    assert (request.method, request.path) == ("PUT", "/hook/crm")
    assert json.loads(request.body) == payload["body"]
    assert request.body == encode_body(payload["body"])
    assert request.headers["nurture-event-type"] == "step.webhook"
    assert request.headers["nurture-event-id"] == event_id_for("step:12:notify-crm")
    assert_authentic(request)


def test_step_webhook_fails_at_once_on_a_permanent_error(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client
) -> None:
    enqueue(sqlite_engine, "step_webhook", "step:13:crm", step_payload(receiver.url))
    receiver.fail_next(1, status=410)
    report = make_processor(sqlite_engine, client).run(NOW)
    assert (report.failed, report.retried) == (1, 0)
    row = rows(sqlite_engine)["step:13:crm"]
    assert (row.status, row.attempts, row.last_error, row.next_attempt_at) == ("failed", 1, "HTTP 410", None)
    assert make_processor(sqlite_engine, client).run(NOW + timedelta(days=1)).claimed == 0


def test_step_webhook_gives_up_after_max_attempts(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client
) -> None:
    enqueue(sqlite_engine, "step_webhook", "step:14:crm", step_payload(receiver.url))
    processor = make_processor(sqlite_engine, client, max_attempts=3)
    receiver.fail_next(10, status=503)
    now = NOW
    for _ in range(2):
        assert processor.run(now).retried == 1
        now = rows(sqlite_engine)["step:14:crm"].next_attempt_at
    assert processor.run(now).failed == 1
    row = rows(sqlite_engine)["step:14:crm"]
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.last_error == "gave up after 3 attempts: HTTP 503"
    assert len(receiver.wait_for(3)) == 3


def test_retry_after_sets_the_next_attempt(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client
) -> None:
    enqueue(sqlite_engine, "sales_webhook", "promoted:15", PROMOTED)
    receiver.fail_next(1, status=429, headers={"Retry-After": "120"})
    make_processor(sqlite_engine, client, receiver.url).run(NOW)
    assert rows(sqlite_engine)["promoted:15"].next_attempt_at == NOW + timedelta(seconds=120)


def test_an_exhausted_send_budget_releases_rows_untouched(
    sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client
) -> None:
    enqueue(sqlite_engine, "sales_webhook", "promoted:16", PROMOTED)
    processor = make_processor(sqlite_engine, client, receiver.url, send_budget=timedelta(seconds=-1))
    report = processor.run(NOW)
    assert (report.claimed, report.released, report.sent) == (1, 1, 0)
    row = rows(sqlite_engine)["promoted:16"]
    assert (row.status, row.attempts, row.lease_until, row.last_error) == ("pending", 0, None, None)
    assert receiver.requests == []
    assert make_processor(sqlite_engine, client, receiver.url).run(NOW).sent == 1  # claimable again at once


def test_backoff_doubles_from_ten_seconds_to_the_hourly_cap_as_documented() -> None:
    config = OutboxConfig()
    delays = [backoff(n, config).total_seconds() for n in range(1, 11)]
    assert delays == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    assert backoff(10_000, config) == timedelta(hours=1)
    give_up_after = sum((backoff(n, config) for n in range(1, config.max_attempts)), timedelta())
    assert round(give_up_after / timedelta(hours=1)) == 11
    docs = DOCS.read_text(encoding="utf-8")
    assert "after 10 s, then 20 s, 40 s, 80 s" in docs
    assert f"after {config.max_attempts} attempts (about 11 hours)" in docs


# -- Slack --------------------------------------------------------------------------------------------------------


def test_slack_message_for_a_promoted_lead() -> None:
    message = slack_message({**PROMOTED, "id": "e", "brief": {"why": ["Asked for <pricing> & a demo"]}})
    assert message["text"] == "New SQL: Ada Lovelace at Analytical Engines"
    header, why, facts, actions = message["blocks"]
    assert header == {"type": "header",
                      "text": {"type": "plain_text", "text": "New SQL: Ada Lovelace at Analytical Engines"}}
    assert why["text"]["text"] == "*Why:*\n• Asked for &lt;pricing&gt; &amp; a demo"
    texts = [f["text"] for f in facts["fields"]]
    assert "*Score:* 87" in texts and "*Owner:* <@U024BE7LH>" in texts
    accept, reject = actions["elements"]
    assert (accept["url"], accept["style"], accept["text"]["text"]) == (PROMOTED["links"]["accept"], "primary",
                                                                         "Accept")
    assert (reject["url"], reject["style"], reject["text"]["text"]) == (PROMOTED["links"]["reject"], "danger",
                                                                         "Reject")


def test_slack_message_without_slack_id_names_the_owner_and_escapes_lead_data() -> None:
    lead = {"email": "x@y.test", "company": "<!channel>", "owner": "grace@acme.test"}
    payload = {"type": "lead.promoted", "lead": lead}
    message = slack_message(payload)
    assert message["text"] == "New SQL: x@y.test at <!channel>"  # plain_text: Slack does not parse it
    fields = [f["text"] for f in message["blocks"][1]["fields"]]
    assert "*Owner:* grace@acme.test" in fields
    assert all("<!channel>" not in f for f in fields)
    assert [b["type"] for b in message["blocks"]] == ["header", "section"]  # no links, no buttons


def test_slack_urls_are_detected() -> None:
    assert is_slack_url("https://hooks.slack.com/services/T0/B0/xyz")
    assert is_slack_url("https://HOOKS.SLACK.COM/services/T0/B0/xyz")
    assert not is_slack_url("https://hooks.slack.com.evil.test/services/T0")
    assert not is_slack_url("https://crm.acme.test/hooks/slack")


def test_format_slack_posts_block_kit(sqlite_engine: Engine, receiver: WebhookReceiver, client: httpx.Client) -> None:
    enqueue(sqlite_engine, "sales_webhook", "promoted:17", {**PROMOTED, "format": "slack"})
    assert make_processor(sqlite_engine, client, receiver.url).run(NOW).sent == 1
    [request] = receiver.wait_for(1)
    body = json.loads(request.body)
    assert set(body) == {"text", "blocks"}
    assert body == slack_message({**PROMOTED, "id": event_id_for("promoted:17")})
    assert request.headers["nurture-event-id"] == event_id_for("promoted:17")
    assert_authentic(request)


# -- owner emails over real SMTP --------------------------------------------------------------------------------


@pytest.fixture
def smtp(smtp_sink: SmtpSink) -> Iterator[SMTPTransport]:
    with SMTPTransport.from_url(smtp_sink.url + "?connections=1&timeout=5") as transport:
        yield transport


OWNER_MAIL = {"to": "Grace Hopper <grace@acme.test>", "subject": "New SQL: Ada Lovelace",
              "text": "Ada Lovelace is ready for sales.\n", "html": "<p>Ada Lovelace is ready for sales.</p>"}


def test_owner_email_reaches_the_smtp_sink_once(
    sqlite_engine: Engine, client: httpx.Client, smtp: SMTPTransport, smtp_sink: SmtpSink
) -> None:
    enqueue(sqlite_engine, "owner_email", "owner:promoted:1", OWNER_MAIL)
    processor = make_processor(sqlite_engine, client, mail=smtp)
    assert processor.run(NOW).sent == 1
    assert processor.run(NOW + timedelta(days=1)).claimed == 0
    [message] = smtp_sink.wait_for(1)
    assert message.rcpt_tos == ("grace@acme.test",) and message.mail_from == "sales@acme.test"
    parsed = message.parsed()
    assert parsed["Subject"] == "New SQL: Ada Lovelace"
    assert parsed["Message-ID"] == message_id_for("outbox:owner:promoted:1", "acme.test")
    assert parsed.get_body(("plain",)).get_content().rstrip() == "Ada Lovelace is ready for sales."
    assert rows(sqlite_engine)["owner:promoted:1"].status == "sent"
    assert len(smtp_sink.messages) == 1


def test_owner_email_retries_after_a_temporary_smtp_refusal(
    sqlite_engine: Engine, client: httpx.Client, smtp: SMTPTransport, smtp_sink: SmtpSink
) -> None:
    enqueue(sqlite_engine, "owner_email", "owner:promoted:2", OWNER_MAIL)
    processor = make_processor(sqlite_engine, client, mail=smtp)
    smtp_sink.fail_next("RCPT", 451)
    assert processor.run(NOW).retried == 1
    row = rows(sqlite_engine)["owner:promoted:2"]
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 1, NOW + timedelta(seconds=10))
    assert row.last_error.startswith("451")
    assert processor.run(NOW + timedelta(seconds=10)).sent == 1
    assert len(smtp_sink.wait_for(1)) == 1


def test_malformed_owner_email_is_kept_with_the_reason(sqlite_engine: Engine, client: httpx.Client,
                                                       smtp: SMTPTransport) -> None:
    enqueue(sqlite_engine, "owner_email", "owner:bad", {"subject": "x", "text": "y"})
    report = make_processor(sqlite_engine, client, mail=smtp).run(NOW)
    assert (report.retried, report.failed) == (1, 0)
    row = rows(sqlite_engine)["owner:bad"]
    assert row.status == "pending" and row.last_error == "malformed owner email: missing 'to'"
    assert row.next_attempt_at == NOW + timedelta(hours=1)


# -- several workers ------------------------------------------------------------------------------------------------


def test_two_processors_never_deliver_a_row_twice(engine: Engine, receiver: WebhookReceiver) -> None:
    for index in range(60):
        enqueue(engine, "sales_webhook", f"promoted:{index}", {**PROMOTED, "n": index})
    start = threading.Barrier(2)
    reports: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with make_client() as own_client:
                processor = make_processor(engine, own_client, receiver.url, batch_size=7, concurrency=4)
                start.wait(timeout=10)
                reports.append(processor.drain(lambda: NOW).sent)
        except BaseException as exc:  # noqa: BLE001 - surfaced in the main thread
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors and not any(w.is_alive() for w in workers)
    assert sum(reports) == 60
    requests = receiver.wait_for(60)
    assert len(requests) == 60
    assert sorted(json.loads(r.body)["n"] for r in requests) == list(range(60))
    assert len({r.headers["nurture-event-id"] for r in requests}) == 60
    assert {(row.status, row.attempts) for row in rows(engine).values()} == {("sent", 1)}
