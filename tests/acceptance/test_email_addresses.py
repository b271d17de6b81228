"""Lead emails are checked once, the same way at every way in (CSV import, the HTTP API, the CLI): what nurture cannot
deliver over plain SMTP is refused with the reason, and an internationalized domain is stored in its ASCII (punycode)
form, which is what goes out through the real SMTP sink.

Refused: a non-ASCII local part (it needs SMTPUTF8, which nurture does not send), an address literal, a quoted local
part. The CLI runs as a subprocess, the API on a real uvicorn server, the worker with the injected clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from http_server import HttpServer
from smtp_sink import SmtpSink
from sqlalchemy import func, insert, select
from worker_world import Clock, Project, deliveries, dispatch_config, write_project

from nurture.clock import FixedClock
from nurture.definitions.loader import load_catalog
from nurture.definitions.scoring import load_scoring
from nurture.intake import create_app
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import make_engine, transaction
from nurture.storage.migrate import upgrade
from nurture.storage.models import Lead
from nurture.worker.runner import Worker

NURTURE = Path(sys.executable).with_name("nurture")
API_KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

IDN = "Zoe@Bücher.example"
IDN_STORED = "zoe@xn--bcher-kva.example"
REFUSED = {
    "josé@example.com": "SMTPUTF8",  # a non-ASCII local part
    "ana@[127.0.0.1]": "bracketed IP address",  # an address literal
    '"ana"@example.com': "Quoting",  # a quoted local part
}


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return write_project(tmp_path / "project")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    upgrade(url)
    return url


def lead_emails(database_url: str) -> list[str]:
    engine = make_engine(database_url)
    try:
        with transaction(engine, read_only=True) as conn:
            return sorted(conn.execute(select(Lead.__table__.c.email)).scalars())
    finally:
        engine.dispose()


def nurture(project: Project, database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **project.env(database_url, "console://")}
    return subprocess.run([str(NURTURE), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


# --- CSV import ------------------------------------------------------------------------------------------------------


def test_import_refuses_undeliverable_addresses_by_line_and_stores_idn_domains_as_punycode(
    project: Project, database_url: str, tmp_path: Path
) -> None:
    csv = tmp_path / "leads.csv"
    csv.write_text("email,first_name,stage\n" + "".join(f'"{email.replace(chr(34), chr(34) * 2)}",X,mql\n'
                                                         for email in [IDN, *REFUSED, "ok@example.com"]),
                   encoding="utf-8")
    result = nurture(project, database_url, tmp_path, "leads", "import", str(csv))
    assert result.returncode == 0, result.stderr
    assert "2 new, 0 updated, 3 rejected" in result.stdout
    problems = result.stderr.splitlines()
    assert len(problems) == 3
    for line, (email, reason) in enumerate(REFUSED.items(), start=3):
        [problem] = [p for p in problems if p.startswith(f"{csv}:{line}: ")]
        assert repr(email) in problem and reason in problem
    assert lead_emails(database_url) == ["ok@example.com", IDN_STORED]


# --- CLI ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("email", list(REFUSED))
def test_cli_leads_add_and_event_refuse_undeliverable_addresses(project: Project, database_url: str, tmp_path: Path,
                                                                  email: str) -> None:
    for args in (("leads", "add", email, "--stage", "mql"), ("event", email, "page_view")):
        result = nurture(project, database_url, tmp_path, *args)
        assert result.returncode != 0
        assert "invalid email" in result.stderr and REFUSED[email] in result.stderr, result.stderr
    assert lead_emails(database_url) == []


def test_cli_stores_an_idn_domain_as_punycode_and_finds_the_lead_by_either_form(project: Project, database_url: str,
                                                                                tmp_path: Path) -> None:
    refused = nurture(project, database_url, tmp_path, "leads", "add", "Zoë@Bücher.example")
    assert refused.returncode != 0 and "SMTPUTF8" in refused.stderr, "the local part zoë is not ASCII"
    added = nurture(project, database_url, tmp_path, "leads", "add", IDN, "--first-name", "Zoe")
    assert added.returncode == 0, added.stderr
    assert f"added lead {IDN_STORED}" in added.stdout
    shown = nurture(project, database_url, tmp_path, "leads", "show", "zoe@bücher.example", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["lead"]["email"] == "zoe@xn--bcher-kva.example"
    assert lead_emails(database_url) == ["zoe@xn--bcher-kva.example"]


# --- HTTP API ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def api(project: Project, database_url: str) -> Iterator[str]:
    engine = make_engine(database_url)
    catalog = load_catalog(project.campaigns_dir, project.templates_dir).raise_for_problems()
    rules, problems = load_scoring(project.campaigns_dir)
    assert not problems
    app = create_app(Settings(_env_file=None, api_key=API_KEY, database_url=database_url), engine=engine,
                     catalog=catalog, rules=rules, signer=Signer("s3cret"), clock=Clock())
    with HttpServer(app) as server:
        yield server.url
    app.state.intake.close()
    engine.dispose()


@pytest.mark.parametrize("email", list(REFUSED))
def test_api_refuses_undeliverable_addresses_with_a_4xx_and_writes_nothing(api: str, database_url: str,
                                                                            email: str) -> None:
    requests: list[tuple[str, Any]] = [
        ("/v1/leads", {"email": email, "stage": "mql"}),
        ("/v1/events", {"email": email, "type": "page_view"}),
        ("/v1/events", {"events": [{"email": "ok@example.com", "type": "page_view"},
                                   {"email": email, "type": "page_view"}]}),
    ]
    for path, body in requests:
        response = httpx.post(api + path, content=json.dumps(body).encode(), headers=AUTH)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
        error = json.dumps(response.json()["error"], ensure_ascii=False)
        assert "invalid email" in error and REFUSED[email] in error, error
    assert lead_emails(database_url) == []


def test_api_stores_an_idn_domain_as_punycode_and_finds_the_lead_by_either_form(api: str, database_url: str) -> None:
    response = httpx.post(api + "/v1/leads", content=json.dumps({"email": "Zoe@Bücher.example"}).encode(),
                          headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/v1/leads/zoe@xn--bcher-kva.example"
    event = httpx.post(api + "/v1/events", content=json.dumps({"email": "zoe@BÜCHER.example", "type": "page_view"}),
                       headers=AUTH)
    assert event.status_code < 300, event.text
    for form in ("zoe@bücher.example", "zoe@xn--bcher-kva.example"):
        found = httpx.get(api + "/v1/leads/" + quote(form, safe="@"), headers=AUTH)
        assert found.status_code == 200, found.text
        assert found.json()["lead"]["email"] == "zoe@xn--bcher-kva.example"
        assert [e["type"] for e in found.json()["events"]] == ["page_view"]
    assert lead_emails(database_url) == ["zoe@xn--bcher-kva.example"]


# --- sending ------------------------------------------------------------------------------------------------------------


def test_an_idn_domain_is_sent_to_its_punycode_form_and_a_stored_address_literal_is_never_sent(
    project: Project, database_url: str, tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    """The literal stands for a row stored before the check (or written by another tool): it fails with the reason."""
    added = nurture(project, database_url, tmp_path, "leads", "add", "Zoe@Bücher.example", "--stage", "mql")
    assert added.returncode == 0, added.stderr
    engine = make_engine(database_url)
    try:
        with transaction(engine) as conn:
            template = conn.execute(select(Lead.__table__).where(Lead.__table__.c.email == "zoe@xn--bcher-kva.example")
                                    ).mappings().one()
            row = {k: v for k, v in template.items() if k != "id"}
            conn.execute(insert(Lead.__table__).values({**row, "email": "ana@[127.0.0.1]"}))
            assert conn.execute(select(func.count()).select_from(Lead.__table__)).scalar() == 2
    finally:
        engine.dispose()

    # the CLI enrolled the lead at the machine's time: the worker's fixed clock is a minute later
    clock = FixedClock(datetime.now(timezone.utc) + timedelta(minutes=1))
    worker = Worker(project.settings(database_url, smtp_sink.url), clock=clock, config=dispatch_config())
    try:
        report = worker.run_once()
        assert (report.sent, report.failed) == (1, 1)
        [message] = smtp_sink.wait_for(1)
        assert message.rcpt_tos == ("zoe@xn--bcher-kva.example",)
        assert message.parsed()["To"] == "zoe@xn--bcher-kva.example"
        failed = {row.email: row for row in deliveries(worker.engine)}["ana@[127.0.0.1]"]
        assert failed.status == "failed" and "address literal" in failed.error
    finally:
        worker.transport.close()
        worker.engine.dispose()
