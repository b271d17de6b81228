"""Tracking pixel, click redirects and unsubscribe links over a real uvicorn server and a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from db_fixtures import migrated_sqlite_url
from http_server import HttpServer
from intake_world import (
    Clock,
    add_delivery,
    count_rows,
    enrollments_of,
    events_of,
    lead_row,
    load_world,
    write_campaigns,
)
from sqlalchemy import delete
from sqlalchemy.engine import Engine

from nurture.intake import create_app
from nurture.intake.tracking import PIXEL
from nurture.rendering.links import LinkBuilder
from nurture.settings import Settings
from nurture.signing import Signer
from nurture.storage.database import make_engine, transaction
from nurture.storage.models import Delivery, EngagementEvent

SECRET = "tracking-secret"
TARGET = "https://example.com/pricing?plan=pro&utm_source=nurture"


@dataclass
class Tracking:
    url: str
    engine: Engine
    clock: Clock
    delivery_id: int
    links: LinkBuilder

    def get(self, link: str) -> httpx.Response:
        return httpx.get(link, follow_redirects=False)


@pytest.fixture
def tracking(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tracking]:
    url = migrated_sqlite_url(request, tmp_path / "tracking.db")
    engine = make_engine(url, busy_timeout=5)
    catalog, rules = load_world(write_campaigns(tmp_path / "campaigns"))
    clock = Clock()
    delivery_id = add_delivery(engine, "reader@example.com")
    signer = Signer(SECRET)
    app = create_app(Settings(api_key="k", database_url=url), engine=engine, catalog=catalog, rules=rules,
                     signer=signer, clock=clock)
    with HttpServer(app) as server:
        yield Tracking(server.url, engine, clock, delivery_id, LinkBuilder(server.url, signer, str(delivery_id)))
    engine.dispose()


def tampered(link: str) -> list[str]:
    """Ways to alter a signed link: a changed payload, a changed signature, a truncated token."""
    base, _, token = link.rpartition("/")
    suffix = ".gif" if token.endswith(".gif") else ""
    token = token.removesuffix(".gif")
    body, _, mac = token.partition(".")
    flip = lambda text, i: text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]  # noqa: E731
    return [f"{base}/{flip(body, 3)}.{mac}{suffix}", f"{base}/{body}.{flip(mac, 5)}{suffix}",
            f"{base}/{body}.{mac[:-2]}{suffix}", f"{base}/{body}{suffix}", f"{base}/garbage{suffix}"]


# --- opens ---------------------------------------------------------------------------------------------------------


def test_the_pixel_records_an_open_and_is_an_uncached_gif(tracking):
    response = tracking.get(tracking.links.open_pixel())

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content == PIXEL and response.content.startswith(b"GIF89a")
    assert "no-store" in response.headers["cache-control"] and response.headers["pragma"] == "no-cache"
    [event] = events_of(tracking.engine)
    assert (event.email, event.type, event.campaign_id, event.step_key, event.delivery_id, event.points) == (
        "reader@example.com", "email_open", "mql-nurture", "welcome", tracking.delivery_id, 1)


def test_repeated_opens_count_but_a_burst_counts_once(tracking):
    pixel = tracking.links.open_pixel()
    tracking.get(pixel)
    tracking.clock.advance(seconds=3)
    tracking.get(pixel)  # a mail client fetching twice
    assert len(events_of(tracking.engine)) == 1
    tracking.clock.advance(seconds=10)
    tracking.get(pixel)  # read again later
    assert len(events_of(tracking.engine)) == 2
    assert lead_row(tracking.engine, "reader@example.com").score == 2


# --- clicks ----------------------------------------------------------------------------------------------------------


def test_a_click_redirects_to_the_signed_url_only(tracking):
    response = tracking.get(tracking.links.click(TARGET))

    assert response.status_code == 302
    assert response.headers["location"] == TARGET
    [event] = events_of(tracking.engine)
    assert (event.type, event.properties["url"], event.delivery_id, event.points) == (
        "email_click", TARGET, tracking.delivery_id, 3)


def test_a_click_link_with_another_url_swapped_in_is_404(tracking):
    # The URL lives inside the signed payload: re-signing with another secret (an attacker's) is refused.
    forged = LinkBuilder(tracking.url, Signer("attacker"), str(tracking.delivery_id)).click("https://evil.example/")
    response = tracking.get(forged)
    assert response.status_code == 404 and "location" not in response.headers
    response = tracking.get(tracking.links.click(TARGET) + "?url=https://evil.example/")
    assert response.headers["location"] == TARGET  # query parameters cannot redirect elsewhere


def test_a_click_burst_on_one_url_counts_once_but_different_urls_count(tracking):
    tracking.get(tracking.links.click(TARGET))
    tracking.get(tracking.links.click(TARGET))
    tracking.get(tracking.links.click("https://example.com/other"))
    assert [e.properties["url"] for e in events_of(tracking.engine)] == [TARGET, "https://example.com/other"]


@pytest.mark.parametrize("kind", ["open", "click", "unsubscribe"])
def test_forged_and_altered_tokens_are_404_and_record_nothing(tracking, kind):
    link = {"open": tracking.links.open_pixel, "click": lambda: tracking.links.click(TARGET),
            "unsubscribe": tracking.links.unsubscribe}[kind]()
    for bad in tampered(link):
        response = tracking.get(bad)
        assert response.status_code == 404, bad
        assert "location" not in response.headers
        if kind == "unsubscribe":
            assert httpx.post(bad, data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert count_rows(tracking.engine, EngagementEvent) == 0
    assert lead_row(tracking.engine, "reader@example.com").unsubscribed_at is None


def test_a_token_for_one_purpose_is_refused_for_another(tracking):
    open_token = tracking.links.open_pixel().rsplit("/", 1)[1].removesuffix(".gif")
    click_token = tracking.links.click(TARGET).rsplit("/", 1)[1]
    assert tracking.get(f"{tracking.url}/t/c/{open_token}").status_code == 404
    assert tracking.get(f"{tracking.url}/t/o/{click_token}.gif").status_code == 404
    assert httpx.post(f"{tracking.url}/u/{click_token}", data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert count_rows(tracking.engine, EngagementEvent) == 0


def test_a_valid_token_of_a_delivery_that_is_gone_is_404(tracking):
    links = [tracking.links.open_pixel(), tracking.links.click(TARGET), tracking.links.unsubscribe()]
    with transaction(tracking.engine) as conn:
        conn.execute(delete(Delivery.__table__))
    for link in links:
        assert tracking.get(link).status_code == 404
    assert httpx.post(links[2], data={"List-Unsubscribe": "One-Click"}).status_code == 404
    assert count_rows(tracking.engine, EngagementEvent) == 0


# --- unsubscribe -----------------------------------------------------------------------------------------------------


def test_the_unsubscribe_page_asks_and_changes_nothing(tracking):
    response = tracking.get(tracking.links.unsubscribe())

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in response.text and "Unsubscribe" in response.text
    assert "r***@example.com" in response.text and "reader@example.com" not in response.text
    assert lead_row(tracking.engine, "reader@example.com").unsubscribed_at is None
    assert count_rows(tracking.engine, EngagementEvent) == 0
    assert enrollments_of(tracking.engine, "reader@example.com")[0].status == "active"


def test_one_click_unsubscribe_takes_effect_at_once_and_is_idempotent(tracking):
    link = tracking.links.unsubscribe()
    response = httpx.post(link, content=b"List-Unsubscribe=One-Click",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert response.status_code == 200
    assert "You are unsubscribed" in response.text
    lead = lead_row(tracking.engine, "reader@example.com")
    assert lead.unsubscribed_at == tracking.clock.now
    assert [(e.status, e.end_reason) for e in enrollments_of(tracking.engine, "reader@example.com")] == [
        ("exited", "unsubscribed")]
    [event] = events_of(tracking.engine)
    assert (event.type, event.properties["method"], event.delivery_id) == ("unsubscribe", "one-click", tracking.delivery_id)

    tracking.clock.advance(minutes=5)
    again = httpx.post(link, data={"confirm": "yes"})  # the page's button, pressed after the mail client's POST
    assert again.status_code == 200 and "You are unsubscribed" in again.text
    assert len(events_of(tracking.engine)) == 1
    assert lead_row(tracking.engine, "reader@example.com").unsubscribed_at == lead.unsubscribed_at
    assert "You are unsubscribed" in tracking.get(link).text


def test_the_confirmation_form_unsubscribes(tracking):
    response = httpx.post(tracking.links.unsubscribe(), data={"confirm": "yes"})
    assert response.status_code == 200
    assert lead_row(tracking.engine, "reader@example.com").unsubscribed_at is not None
    assert events_of(tracking.engine)[0].properties["method"] == "page"
