"""``ab_lead_step`` (migration 0010_abrollup) on SQLite and PostgreSQL: what its triggers keep as emails are written,
sent, retried, failed and engaged equals what a rebuild computes from the rows, and an A/B test on clicks or opens
counted from it equals :func:`nurture.core.abtest.count_goal` over every send of the period, for leads with one and
with several emails of the step, at the period's end and at an earlier as-of time; the campaigns with a holdout."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from db_fixtures import db_url, engine, migrated_url, postgres_available, postgres_template  # noqa: F401  (fixtures)
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Engine

from nurture.core.abtest import count_goal
from nurture.core.facts import CLICK, OPEN
from nurture.storage import experiments
from nurture.storage.database import transaction
from nurture.storage.rollups import rebuild, snapshot
from nurture.storage.tables import AB, D, E, EV, L

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
STEPS = (("welcome", "hello"), ("welcome", "plain"), ("news", "issue"))


def write_history(engine: Engine, seed: int = 7) -> None:
    """Leads with one to three emails of each step (one enrollment each), written as the dispatcher writes them
    (claimed, then sent, retried or failed, several rows per statement), some sent at once, an email moved to failed
    after it was sent, retries sent in one statement, and opens and clicks one at a time and in one statement, some before any send."""
    rng = random.Random(seed)
    with transaction(engine) as conn:
        conn.execute(insert(L), [dict(email=f"l{i}@example.com", stage="mql", tags=[], fields={}, score=0.0,
                                      created_at=T0, updated_at=T0, stage_changed_at=T0) for i in range(40)])
        leads = list(conn.execute(select(L.c.id).order_by(L.c.id)).scalars())
    enrollments, emails = [], []
    for lead in leads:
        for campaign, step in STEPS:
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                enrollments.append(dict(lead_id=lead, campaign_id=campaign, status="completed", arrived_at=T0,
                                        state={}, priority=0, enrolled_at=T0, held_out=False))
                emails.append((lead, campaign, step))
    with transaction(engine) as conn:
        conn.execute(insert(E), enrollments)
        ids = list(conn.execute(select(E.c.id).order_by(E.c.id)).scalars())
        created = [T0 + rng.randint(0, 20 * 24) * HOUR for _ in emails]
        conn.execute(insert(D), [
            dict(enrollment_id=e, lead_id=lead, campaign_id=campaign, step_id=step, step_key=step,
                 variant=None if step == "plain" and rng.random() < 0.5 else rng.choice("ab"), channel="email",
                 status="claimed", created_at=at, attempts=0)
            for e, (lead, campaign, step), at in zip(ids, emails, created, strict=True)])
        deliveries = list(conn.execute(select(D.c.id, D.c.created_at).order_by(D.c.id)))
    outcomes = []
    for delivery in deliveries:
        status = rng.choice(("sent", "sent", "sent", "sent", "retry", "failed"))
        outcomes.append(dict(d_id=delivery.id, status=status,
                             sent_at=delivery.created_at + rng.randint(0, 30) * HOUR if status == "sent" else None))
    with transaction(engine) as conn:
        conn.execute(update(D).where(D.c.id == bindparam("d_id")).values(status=bindparam("status"),
                                                                        sent_at=bindparam("sent_at")), outcomes)
    with transaction(engine) as conn:  # a retried email sent later, in a statement of its own
        retried = next(o for o in outcomes if o["status"] == "retry")
        conn.execute(update(D).where(D.c.id == retried["d_id"]).values(status="sent", sent_at=T0 + 30 * 24 * HOUR))
        gone = next(o for o in outcomes if o["status"] == "sent")
        conn.execute(update(D).where(D.c.id == gone["d_id"]).values(status="failed"))  # sent, then failed
        # the other retried emails sent in one statement; two emails of one lead and step written sent at once
        conn.execute(update(D).where(D.c.status == "retry").values(status="sent", sent_at=T0 + 31 * 24 * HOUR))
        conn.execute(insert(D), [dict(enrollment_id=ids[1], lead_id=emails[1][0], campaign_id="welcome",
                                      step_id="hello", step_key=f"hello/{n}", variant="ab"[n], channel="email",
                                      status="sent", created_at=T0 + n * HOUR, sent_at=T0 + (2 - n) * HOUR)
                                 for n in (0, 1)])
    events = []
    for delivery in deliveries:
        for kind in (OPEN, CLICK):
            if rng.random() < 0.4:
                events.append(dict(lead_id=emails[delivery.id - deliveries[0].id][0], type=kind,
                                   occurred_at=delivery.created_at + rng.randint(-2, 60) * HOUR, recorded_at=T0,
                                   delivery_id=delivery.id, properties={}, points=0.0))
    with transaction(engine) as conn:
        conn.execute(insert(EV), events[: len(events) // 2])  # one statement
    with transaction(engine) as conn:
        for event in events[len(events) // 2:]:  # one at a time
            conn.execute(insert(EV).values(**event))


def by_count_goal(engine: Engine, campaign: str, step: str, goal: str, since: datetime | None, until: datetime,
                  as_of: datetime) -> dict[str, tuple[int, int]]:
    with transaction(engine, read_only=True) as conn:
        sends = experiments.step_sends(conn, campaign, step, since=since, until=until)
        engaged = experiments.engaged_deliveries(conn, [s.delivery_id for s in sends], until=as_of)
    counts = count_goal(sends, goal, as_of, variants=["a", "b"], engaged=engaged, goal_times={})
    return {c.variant: (c.sends, c.conversions) for c in counts if c.sends}


def test_the_triggers_keep_what_a_rebuild_computes(engine: Engine) -> None:
    write_history(engine)
    with transaction(engine) as conn:
        maintained = snapshot(conn)["ab_lead_step"]
        rebuild(conn)
        rebuilt = snapshot(conn)["ab_lead_step"]
    assert maintained == rebuilt
    rows = [dict(zip(AB.c.keys(), row, strict=True)) for row in rebuilt]
    assert {row["sends"] for row in rows} == {1, 2, 3}
    assert any(row["clicked_at"] is not None for row in rows) and any(row["opened_at"] is None for row in rows)


@pytest.mark.parametrize("goal", ["click", "open"])
def test_the_counts_equal_count_goal_over_every_send(engine: Engine, goal: str) -> None:
    write_history(engine)
    types = [CLICK] if goal == "click" else [OPEN, CLICK]
    end = T0 + 31 * 24 * HOUR
    periods = [(None, end, end), (None, end, T0 + 5 * 24 * HOUR), (T0 + 3 * 24 * HOUR, T0 + 12 * 24 * HOUR, end),
               (T0 + 3 * 24 * HOUR, T0 + 12 * 24 * HOUR, T0 + 8 * 24 * HOUR + timedelta(minutes=30)),
               (T0 + 7 * 24 * HOUR, end, T0 + 9 * 24 * HOUR)]
    with transaction(engine, read_only=True) as conn:
        several = conn.execute(select(AB.c.lead_id).where(AB.c.sends > 1)).all()
    assert several  # leads with several emails of a step are counted from their emails
    checked = 0
    for campaign, step in STEPS:
        for since, until, as_of in periods:
            with transaction(engine, read_only=True) as conn:
                found = experiments.engagement_by_variant(conn, campaign, step, since=since, until=until,
                                                          as_of=as_of, types=types)
            expected = by_count_goal(engine, campaign, step, goal, since, until, as_of)
            assert found == expected, (campaign, step, since, until, as_of)
            checked += sum(n for n, _ in expected.values())
    assert checked > 100


def test_the_campaigns_that_held_out_a_lead_in_the_period(engine: Engine) -> None:
    with transaction(engine) as conn:
        conn.execute(insert(L).values(email="h@example.com", stage="mql", tags=[], fields={}, score=0.0,
                                      created_at=T0, updated_at=T0, stage_changed_at=T0))
        lead = conn.execute(select(L.c.id)).scalar_one()
        conn.execute(insert(E), [dict(lead_id=lead, campaign_id=c, status="completed", arrived_at=at, state={},
                                      priority=0, enrolled_at=at, held_out=held)
                                 for c, at, held in (("a", T0, True), ("b", T0, False), ("c", T0 + 48 * HOUR, True))])
    with transaction(engine, read_only=True) as conn:
        assert experiments.holdout_campaigns(conn, since=T0, until=T0 + HOUR) == ["a"]
        assert experiments.holdout_campaigns(conn, since=T0, until=T0 + 72 * HOUR) == ["a", "c"]
        assert experiments.holdout_campaigns(conn, since=T0, until=T0 + 72 * HOUR, campaign="b") == []
        assert experiments.holdout_campaigns(conn, since=T0 + HOUR, until=T0 + 2 * HOUR) == []


def test_the_steps_with_variants_in_a_period_equal_the_emails(engine: Engine) -> None:
    """The A/B steps of a period, read from the emails' daily rollup for its whole UTC days and from the emails for
    the part days at its ends, are the steps that created an email with a variant in it (a step whose emails in a
    period all lack a variant is not one)."""
    write_history(engine)
    with transaction(engine) as conn:  # a step that sends without variants only, and one whose variant email is late
        conn.execute(insert(D), [dict(enrollment_id=conn.execute(select(E.c.id)).scalars().first(),
                                      lead_id=conn.execute(select(L.c.id)).scalars().first(), campaign_id="news",
                                      step_id=step, step_key=step, variant=variant, channel="email", status="sent",
                                      created_at=at, sent_at=at, attempts=0)
                                 for step, variant, at in (("digest", None, T0), ("late", "a", T0 + 40 * 24 * HOUR))])

    def direct(since: datetime, until: datetime, campaign: str | None) -> list[tuple[str, str]]:
        with transaction(engine, read_only=True) as conn:
            rows = conn.execute(select(D.c.campaign_id, D.c.step_id, D.c.variant, D.c.created_at, D.c.channel)).all()
        return sorted({(r.campaign_id, r.step_id) for r in rows if r.variant is not None and r.channel == "email"
                       and since <= r.created_at < until and campaign in (None, r.campaign_id)})

    rng = random.Random(3)
    day = timedelta(days=1)
    midnight = T0.replace(hour=0)
    periods = [(midnight, midnight + 45 * day), (T0, T0 + 45 * day), (T0 + 3 * HOUR, T0 + 5 * HOUR),
               (midnight + 39 * day, midnight + 41 * day), (T0 + 25 * day, T0 + 39 * day)]
    periods += [(start, start + rng.randint(1, 30 * 24) * HOUR)
                for start in (T0 + rng.randint(-24, 35 * 24) * HOUR for _ in range(25))]
    seen = set()
    for since, until in periods:
        for campaign in (None, "news"):
            with transaction(engine, read_only=True) as conn:
                found = experiments.ab_steps(conn, since=since, until=until, campaign=campaign)
            assert found == direct(since, until, campaign), (since, until, campaign)
            seen.add(tuple(found))
    assert ("news", "digest") not in {step for steps in seen for step in steps}
    assert any(("news", "late") in steps for steps in seen) and any(len(steps) == 3 for steps in seen)
