"""The lead's whole journey through a running ``nurture run`` (worker + HTTP intake in one process), over real HTTP and
a real SMTP server: an ebook download makes the lead an MQL, the first nurture email goes out, the test follows the
tracked link and the open pixel from the received message, the score rises, the test unsubscribes with the one-click
link from the List-Unsubscribe header, and no further email is sent.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from smtp_sink import SmtpSink

NURTURE = Path(sys.executable).with_name("nurture")
API_KEY = "journey-key"

CAMPAIGN = """\
id: ebook
name: Ebook downloaders
entry: {stage: mql}
steps:
  - id: welcome
    send_window: always
    email: {template: welcome.html.j2, subject: "Your guide, {{ lead.first_name }}"}
  - id: follow-up
    wait: 4s
    send_window: always
    email: {template: welcome.html.j2, subject: "Did you read it?"}
"""
TEMPLATE = """<p>Hi {{ lead.first_name }},</p>
<p><a href="{{ track('https://acme.example/guide.pdf') }}">Download the guide</a></p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
<img src="{{ open_pixel_url }}" width="1" height="1" alt="">
"""
SCORING = """\
behaviour:
  events:
    content_download: 40
    email_open: 1
    email_click: 5
thresholds:
  mql: 40
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def service(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[str]:
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "campaigns" / "ebook.yaml").write_text(CAMPAIGN)
    (tmp_path / "campaigns" / "scoring.yaml").write_text(SCORING)
    (tmp_path / "templates" / "welcome.html.j2").write_text(TEMPLATE)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    env.update(NURTURE_DATABASE_URL=f"sqlite:///{tmp_path / 'nurture.db'}", NURTURE_MAIL_URL=smtp_sink.url,
               NURTURE_BASE_URL=base, NURTURE_HTTP_PORT=str(port), NURTURE_API_KEY=API_KEY,
               NURTURE_CAMPAIGNS_DIR=str(tmp_path / "campaigns"), NURTURE_TEMPLATES_DIR=str(tmp_path / "templates"),
               NURTURE_FROM="Acme <hello@acme.example>")
    subprocess.run([str(NURTURE), "db", "upgrade"], env=env, cwd=tmp_path, check=True, capture_output=True)
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen([str(NURTURE), "run"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _healthy(base), timeout=30, what="nurture run to serve /healthz")
        yield base
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0, (tmp_path / "run.log").read_text()[-3000:]
        log.close()


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_download_nurture_engage_unsubscribe(service: str, smtp_sink: SmtpSink) -> None:
    api = httpx.Client(base_url=service, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)
    email = "ada@example.com"
    assert api.post("/v1/leads", json={"email": email, "first_name": "Ada"}).status_code == 201
    downloaded = api.post("/v1/events", json={"email": email, "type": "content_download", "id": "dl-1",
                                              "properties": {"content": "playbook"}})
    assert downloaded.status_code == 202, downloaded.text
    assert downloaded.json()["results"][0]["stage"] == "mql"

    [welcome] = smtp_sink.wait_for(1, timeout=10)
    sent_at = time.monotonic()
    message = welcome.parsed()
    assert message["Subject"] == "Your guide, Ada"
    html = message.get_body(("html",)).get_content()
    click = re.search(r'href="([^"]+/t/c/[^"]+)"', html).group(1)
    pixel = re.search(r'src="([^"]+/t/o/[^"]+\.gif)"', html).group(1)
    one_click = message["List-Unsubscribe"].strip("<>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    followed = httpx.get(click, follow_redirects=False)
    assert followed.status_code == 302 and followed.headers["location"] == "https://acme.example/guide.pdf"
    opened = httpx.get(pixel)
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"

    lead = api.get(f"/v1/leads/{email}").json()
    kinds = {item["label"] for item in lead["score"]["items"]}
    assert {"content_download", "email_click", "email_open"} <= kinds
    assert lead["score"]["total"] == 46.0  # 40 for the download, 5 for the click, 1 for the open
    assert lead["lead"]["stage"] == "mql"

    gone = httpx.post(one_click, content="List-Unsubscribe=One-Click",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert gone.status_code == 200
    after = api.get(f"/v1/leads/{email}").json()
    assert all(e["status"] == "exited" for e in after["enrollments"]), after["enrollments"]

    # the follow-up was due 4 s after the welcome: wait until then (and a little more), and nothing more comes
    wait_until(lambda: time.monotonic() > sent_at + 6, timeout=10, what="the follow-up's due time")
    assert len(smtp_sink.messages) == 1
