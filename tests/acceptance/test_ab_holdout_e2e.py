"""An A/B test with ``winner:`` in a campaign with ``holdout: 10%``, end to end: the real worker sends over SMTP to a
real aiosmtpd sink, the test clicks the tracked links of the received emails over real HTTP with a known true uplift
(variant b is clicked five times as often as a), the worker calls and records the winner, later leads all get it,
held-out leads receive no mail at all, and ``nurture report --json`` (the console script) states the verdict and a
lift that equals the calculation done here from what the sink received and which leads the test made SQLs.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_server import HttpServer
from smtp_sink import SmtpSink
from worker_world import T0, Clock, Project, by_recipient, dispatch_config, seed_leads, write_project

from nurture.application.lead_input import upsert_lead
from nurture.definitions.scoring import load_scoring
from nurture.intake import create_app
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import make_engine, session
from nurture.storage.migrate import upgrade
from nurture.storage.secrets import signing_secret
from nurture.worker.runner import Worker

NURTURE = Path(sys.executable).with_name("nurture")

CAMPAIGN = """\
id: welcome
name: Welcome
holdout: 10%
steps:
  - id: hello
    send_window: always
    email:
      template: hello.html.j2
      subject: "Hello {{ lead.first_name }}"
      variants: [{id: a}, {id: b, subject: "Your guide, {{ lead.first_name }}"}]
      goal: click
      winner: {confidence: 95%, min_sends: 100}
"""
HELLO = '<p>Hi {{ lead.first_name }}, <a href="{{ track(\'https://acme.example/guide\') }}">your guide</a>.</p>\n'
CLICK_RATE = {"a": 0.05, "b": 0.25}  # the true uplift: b is clicked five times as often
SQL_RATE = {"sent": 0.30, "held": 0.10}  # the true lift the campaign causes
CLICK_LINK = re.compile(r'href="[^"]*?(/t/c/[^"]+)"')


def run_worker(project: Project, url: str, sink: SmtpSink, clock: Clock) -> None:
    """``nurture run --once`` in-process, on the test's clock: decide winners, enroll, send everything due."""
    worker = Worker(project.settings(url, sink.url), clock=clock, config=dispatch_config())
    try:
        worker.run_once()
    finally:
        worker.engine.dispose()


def variant_of(subject: str) -> str:
    return "b" if subject.startswith("Your guide") else "a"


def by_hand(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float, float, float]:
    """(difference, Newcombe low, high, Pearson chi-square p-value) at 95 %, computed here from the counts."""
    z = 1.959963984540054

    def wilson(x: int, n: int) -> tuple[float, float]:
        p = x / n
        a, b, c = 1 + z * z / n, -(2 * p + z * z / n), p * p
        d = math.sqrt(b * b - 4 * a * c)
        return (-b - d) / (2 * a), (-b + d) / (2 * a)

    p1, p2 = x1 / n1, x2 / n2
    (l1, u1), (l2, u2) = wilson(x1, n1), wilson(x2, n2)
    pooled = (x1 + x2) / (n1 + n2)
    chi2 = (p1 - p2) ** 2 / (pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return (p1 - p2, p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2), math.erfc(math.sqrt(chi2 / 2)))


def report(project: Project, url: str, sink: SmtpSink) -> dict[str, Any]:
    result = subprocess.run(
        [str(NURTURE), "report", "--since", (T0 - timedelta(days=1)).isoformat(), "--json"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **project.env(url, sink.url)},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_the_winner_is_called_and_sent_to_later_leads_and_the_holdout_gets_nothing(
    tmp_path: Path, smtp_sink: SmtpSink,
) -> None:
    project = write_project(tmp_path / "project", {"welcome": CAMPAIGN})
    (project.templates_dir / "hello.html.j2").write_text(HELLO, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    upgrade(url)
    clock = Clock(T0)
    rng = random.Random(20261206)

    # wave 1: 400 leads; the worker sends the A/B step to those not held out
    first = seed_leads(url, tmp_path, 400, prefix="first")
    run_worker(project, url, smtp_sink, clock)
    received = by_recipient(smtp_sink.messages)
    held_first = [email for email in first if email not in received]
    assert 20 <= len(held_first) <= 60  # about 10 % of 400
    assert all(len(received[email]) == 1 for email in first if email in received)

    # engagement with a known true uplift: each received email's tracked link is clicked over HTTP
    engine = make_engine(url)
    rules, problems = load_scoring(project.campaigns_dir)
    assert not problems
    app = create_app(Settings(_env_file=None, api_key="k", database_url=url), engine=engine,
                     catalog=Worker(project.settings(url, smtp_sink.url), clock=clock).catalog, rules=rules,
                     signer=Signer(signing_secret(engine, "worker-tests-secret")), clock=clock)
    clicks: dict[str, list[int]] = {"a": [0, 0], "b": [0, 0]}
    with HttpServer(app) as server, httpx.Client() as client:
        for email in first:
            if email not in received:
                continue
            message = received[email][0].parsed()
            variant = variant_of(str(message["Subject"]))
            clicks[variant][0] += 1
            if rng.random() < CLICK_RATE[variant]:
                html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
                [path] = CLICK_LINK.findall(html)
                response = client.get(server.url + path, follow_redirects=False)
                assert response.status_code == 302
                clicks[variant][1] += 1
    assert min(clicks["a"][0], clicks["b"][0]) >= 100  # both variants past min_sends

    # the next run calls the winner; wave 2's leads (but the held-out ones) all get it
    clock.advance(hours=1)
    called_at = clock.now
    second = seed_leads(url, tmp_path, 120, prefix="second")
    run_worker(project, url, smtp_sink, clock)
    received = by_recipient(smtp_sink.messages)
    held_second = [email for email in second if email not in received]
    assert 2 <= len(held_second) <= 30
    later = [variant_of(str(received[email][0].parsed()["Subject"])) for email in second if email in received]
    assert later and set(later) == {"b"}
    assert all(len(received[email]) == 1 for email in first if email in received)  # nobody was sent twice

    # conversions to SQL with a known true lift, made through the same use case as `nurture leads add --stage sql`
    converted: dict[str, datetime] = {}
    for email in first + second:
        group = "held" if email in held_first + held_second else "sent"
        if rng.random() < SQL_RATE[group]:
            converted[email] = called_at + timedelta(hours=rng.randint(1, 300))
    with session(engine) as db:
        for email, at in sorted(converted.items(), key=lambda item: item[1]):
            upsert_lead(db, {"email": email, "stage": "sql"}, actor="api", now=at)
    engine.dispose()

    data = report(project, url, smtp_sink)
    [test] = data["ab_tests"]
    assert (test["campaign"], test["step"], test["goal"]) == ("welcome", "hello", "clicks")
    assert {v["variant"]: [v["sends"], v["conversions"]] for v in test["variants"]} == clicks
    difference, low, high, p_value = by_hand(clicks["b"][1], clicks["b"][0], clicks["a"][1], clicks["a"][0])
    [comparison] = test["comparisons"]
    assert comparison["difference"] == pytest.approx(difference, abs=1e-6)
    assert (comparison["low"], comparison["high"]) == pytest.approx((low, high), abs=1e-6)
    assert comparison["p_value"] == pytest.approx(p_value, abs=1e-6) and p_value < 0.05
    assert test["verdict"] == "b beats a on clicks, 95% confidence"
    assert test["winner"]["variant"] == "b"
    assert datetime.fromisoformat(test["winner"]["decided_at"]) == called_at
    assert test["sent_after_call"] == len(later)

    [holdout] = data["holdouts"]
    held = set(held_first + held_second)
    groups = {"sent": [e for e in first + second if e not in held], "held_out": sorted(held)}
    counts = {name: (len(members), sum(e in converted for e in members)) for name, members in groups.items()}
    for name, (leads, sqls) in counts.items():
        assert (holdout[name]["leads"], holdout[name]["sql"]) == (leads, sqls)
    (n_s, x_s), (n_h, x_h) = counts["sent"], counts["held_out"]
    difference, low, high, p_value = by_hand(x_s, n_s, x_h, n_h)
    assert holdout["lift"] == pytest.approx(difference, abs=1e-6)
    assert (holdout["low"], holdout["high"]) == pytest.approx((low, high), abs=1e-6)
    assert holdout["p_value"] == pytest.approx(p_value, abs=1e-6)
    entered = dict.fromkeys(first, T0) | dict.fromkeys(second, called_at)
    for name, members in groups.items():
        hours = [(converted[e] - entered[e]).total_seconds() / 3600 for e in members if e in converted]
        assert holdout[name]["median_hours_to_sql"] == round(statistics.median(hours), 2)
    expected = "the campaign lifts" if p_value < 0.05 and difference > 0 else "no measurable lift yet"
    assert expected in holdout["verdict"]

    # the report's tables say the same in words
    tables = subprocess.run(
        [str(NURTURE), "report", "--since", (T0 - timedelta(days=1)).isoformat()], capture_output=True, text=True,
        timeout=60, env={**os.environ, **project.env(url, smtp_sink.url)},
    ).stdout
    assert "verdict: b beats a on clicks, 95% confidence" in tables
    assert f"winner recorded: b at {called_at.isoformat()}" in tables
    assert f"verdict: {holdout['verdict']}" in tables and "welcome (holdout 10%)" in tables

    # `nurture leads show`: a held-out lead's enrollment says so and walked its path with nothing sent; a later lead
    # got the recorded winner
    env = {**os.environ, **project.env(url, smtp_sink.url)}
    shown = subprocess.run([str(NURTURE), "leads", "show", held_second[0], "--json"], capture_output=True, text=True,
                           timeout=60, env=env)
    lead = json.loads(shown.stdout)
    [enrollment] = lead["enrollments"]
    assert enrollment["held_out"] is True and not lead["deliveries"]
    assert [(p["step"], p["outcome"], p["detail"]) for p in enrollment["path"]] == [("hello", "held_out",
                                                                                    "email not sent")]
    table = subprocess.run([str(NURTURE), "leads", "show", held_second[0]], capture_output=True, text=True,
                           timeout=60, env=env).stdout
    assert re.search(r"welcome\s+\S+\s+yes\s+", table), table
    given = next(email for email in second if email not in held)
    lead = json.loads(subprocess.run([str(NURTURE), "leads", "show", given, "--json"], capture_output=True,
                                     text=True, timeout=60, env=env).stdout)
    assert lead["ab_winners"] == [dict(campaign_id="welcome", step_id="hello", winner="b",
                                       decided_at=called_at.isoformat(), metric="clicks", received="b",
                                       given_the_winner=True)]
