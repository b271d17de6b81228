"""``ab_lead_step`` (migration ``0010_abrollup``): per lead and A/B step, the lead's sent emails of the step with a
variant: the first one (by ``sent_at``, then id: its id, variant and creation time), how many there are (``sends``),
and when the first click, and the first open or click, was recorded on any of them.

An A/B test on clicks or opens counts, per variant, the leads whose first email of the step in the period had it, and
of those the ones that clicked (opened) one of their emails of the step in the period before the as-of time
(:func:`nurture.core.abtest.count_goal`). For a lead with one such email (nearly every lead) that is this table's row:
its email is in the period or not, and its first click is before the as-of time or not. So the test reads the index
of the table for those leads (:mod:`nurture.storage.experiments`), and counts the few leads with several emails of
the step from their emails, as before.

The SQL that computes a lead's row lives here once, for the triggers that keep the table (a delivery that becomes a
sent email with a variant is added to its lead's row; a change to an email that was one recomputes the rows of its
old and new lead and step; an open or click moves the first times earlier) and for :func:`rebuilds` (``nurture db
rebuild-rollups``), so the two agree. SQLite runs the triggers per row; PostgreSQL those of ``delivery`` once per
statement, on the statement's rows (transition tables), as the other rollups do there, and the one of events per row
(:func:`event_trigger`).

On PostgreSQL, as with the opens and clicks of ``rollup_delivery_day``, an open or click recorded in a transaction
that overlaps the one marking its email sent is seen by neither trigger (each reads what was committed when it ran):
the lead's row misses that first time until ``nurture db rebuild-rollups`` recounts it. SQLite's writers take turns.
"""

from __future__ import annotations

from sqlalchemy.engine import Dialect

from nurture.storage.dialect import sums_in_statement_triggers

TABLE = "ab_lead_step"
COLUMNS = ("campaign_id", "step_id", "lead_id", "delivery_id", "variant", "created_at", "sent_at", "sends",
           "clicked_at", "opened_at")
OPENED = "('email_open', 'email_click')"  # a click is an open (images may be blocked)
CLICK = "'email_click'"
KEY = ("campaign_id", "step_id", "lead_id")
WATCHED = ("status", "channel", "variant", "sent_at", "created_at", "campaign_id", "step_id", "lead_id")


def sent_with_variant(row: str) -> str:
    """SQL: the delivery ``row`` is a sent email with a variant (what an A/B step's test counts)."""
    return (f"{row}.channel = 'email' AND {row}.status = 'sent' AND {row}.variant IS NOT NULL "
            f"AND {row}.sent_at IS NOT NULL")


def _in_step(row: str, key: str) -> str:
    """SQL: ``row`` (a delivery) is a sent email with a variant of the lead and step of ``key``."""
    return f"{_same_key(row, key)} AND {sent_with_variant(row)}"


def _first_event(types: str, key: str) -> str:
    return (f"(SELECT min(e.occurred_at) FROM delivery g JOIN engagement_event e ON e.delivery_id = g.id "
            f"WHERE {_in_step('g', key)} AND e.type IN {types})")


def rows(keys: str) -> str:
    """INSERT the rows of the (campaign_id, step_id, lead_id)s that ``keys`` (a SELECT) gives, computed from their
    deliveries and events (the rows must not be there): a few look-ups by lead per key."""
    first = f"(SELECT d.id FROM delivery d WHERE {_in_step('d', 'k')} ORDER BY d.sent_at, d.id LIMIT 1)"
    return (f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "
            "SELECT x.campaign_id, x.step_id, x.lead_id, f.id, f.variant, f.created_at, f.sent_at, x.sends, "
            f"{_first_event(f'({CLICK})', 'x')}, {_first_event(OPENED, 'x')} "
            f"FROM (SELECT k.campaign_id, k.step_id, k.lead_id, {first} AS first_id, "
            f"(SELECT count(*) FROM delivery c WHERE {_in_step('c', 'k')}) AS sends FROM ({keys}) k) x "
            "JOIN delivery f ON f.id = x.first_id")


def _earlier(a: str, b: str) -> str:
    """SQL: the earlier of two times, either of which may be NULL."""
    return f"CASE WHEN {a} IS NULL THEN {b} WHEN {b} IS NULL THEN {a} WHEN {b} < {a} THEN {b} ELSE {a} END"


def _add(select: str) -> str:
    """Add the rows of ``select`` (one per key, in :data:`COLUMNS`' order: a lead's new emails of the step, the first
    of them, how many, their first click and open) to what the table holds for their lead and step."""
    first = f"(excluded.sent_at, excluded.delivery_id) < ({TABLE}.sent_at, {TABLE}.delivery_id)"
    moved = ", ".join(f"{c} = CASE WHEN {first} THEN excluded.{c} ELSE {TABLE}.{c} END"
                      for c in ("delivery_id", "variant", "created_at", "sent_at"))
    return (f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) {select} ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET "
            f"sends = {TABLE}.sends + excluded.sends, {moved}, "
            f"clicked_at = {_earlier(f'{TABLE}.clicked_at', 'excluded.clicked_at')}, "
            f"opened_at = {_earlier(f'{TABLE}.opened_at', 'excluded.opened_at')}")


def _events_of(row: str, types: str) -> str:
    return f"(SELECT min(e.occurred_at) FROM engagement_event e WHERE e.delivery_id = {row}.id AND e.type IN {types})"


def _changed(old: str, new: str) -> str:
    """SQL: the update from ``old`` to ``new`` may change what the table holds for either row's lead and step."""
    return (f"(({sent_with_variant(old)}) OR ({sent_with_variant(new)})) AND ("
            f"{old}.status <> {new}.status OR {old}.channel <> {new}.channel "
            f"OR coalesce({old}.variant, '') <> coalesce({new}.variant, '') "
            f"OR ({old}.sent_at IS NULL) <> ({new}.sent_at IS NULL) OR {old}.sent_at <> {new}.sent_at "
            f"OR {old}.created_at <> {new}.created_at OR {old}.campaign_id <> {new}.campaign_id "
            f"OR {old}.step_id <> {new}.step_id OR {old}.lead_id <> {new}.lead_id)")


def _same_key(a: str, b: str) -> str:
    return " AND ".join(f"{a}.{k} = {b}.{k}" for k in KEY)


def _key_of(row: str) -> str:
    return ", ".join(f"{row}.{k}" for k in KEY)


def event_trigger() -> dict[tuple[str, str], tuple[str, str, list[str]]]:
    """The row trigger (on both databases) that moves a lead's first click and open earlier on an open or click of
    one of its sent emails with a variant: its row is found by key, each part looked up once from the email (a
    statement trigger on PostgreSQL planned the join to the table without knowing the statement's rows, and read it
    whole for each event)."""
    def of(column: str) -> str:
        return f"(SELECT d.{column} FROM delivery d WHERE d.id = NEW.delivery_id AND {sent_with_variant('d')})"

    event = (f"UPDATE {TABLE} SET opened_at = {_earlier('opened_at', 'NEW.occurred_at')}, "
             f"clicked_at = CASE WHEN NEW.type = {CLICK} THEN {_earlier('clicked_at', 'NEW.occurred_at')} "
             "ELSE clicked_at END WHERE " + " AND ".join(f"{k} = {of(k)}" for k in KEY))
    return {("ab_engagement_event_insert", "engagement_event"): (
        "INSERT", f"NEW.delivery_id IS NOT NULL AND NEW.type IN {OPENED}", [event])}


def row_triggers() -> dict[tuple[str, str], tuple[str, str, list[str]]]:
    """SQLite: (name, table) -> (event, condition, statements) of the row triggers. An email that becomes a sent one
    with a variant is added to its lead's row (``ab_delivery_update``); a change to one that was recomputes the rows of
    its old and new lead and step (``ab_delivery_change``)."""
    def add(row: str, where: str) -> str:
        return _add(f"SELECT {_key_of(row)}, {row}.id, {row}.variant, {row}.created_at, {row}.sent_at, 1, "
                    f"{_events_of(row, f'({CLICK})')}, {_events_of(row, OPENED)} WHERE {where}")

    def recompute(row: str, where: str) -> list[str]:
        own = " AND ".join(f"{k} = {row}.{k}" for k in KEY)
        keys = f"SELECT {', '.join(f'{row}.{k} AS {k}' for k in KEY)} WHERE {where}"
        return [f"DELETE FROM {TABLE} WHERE {own} AND {where}", rows(keys)]

    was, now = sent_with_variant("OLD"), sent_with_variant("NEW")
    moved = " OR ".join(f"OLD.{k} <> NEW.{k}" for k in KEY)

    return {
        ("ab_delivery_insert", "delivery"): ("INSERT", now, [add("NEW", "1 = 1")]),
        ("ab_delivery_update", "delivery"): (f"UPDATE OF {', '.join(WATCHED)}", f"{now} AND NOT ({was})",
                                             [add("NEW", "1 = 1")]),
        ("ab_delivery_change", "delivery"): (
            f"UPDATE OF {', '.join(WATCHED)}", f"{was} AND {_changed('OLD', 'NEW')}",
            [*recompute("OLD", "1 = 1"), *recompute("NEW", f"({now}) AND ({moved})")]),
        **event_trigger(),
    }


def statement_triggers() -> dict[tuple[str, str], tuple[str, list[str]]]:
    """PostgreSQL: (name, table) -> (event, statements) of the statement triggers of ``delivery`` (``new_rows``,
    ``old_rows``): the statement's new sent emails with a variant added per lead and step in key order, other changes
    recomputed. Events have :func:`event_trigger`."""
    def add(source: str, where: str) -> str:
        window = f"OVER (PARTITION BY {', '.join(KEY)})"
        return _add(f"SELECT DISTINCT ON ({', '.join(KEY)}) {', '.join(KEY)}, id, variant, created_at, sent_at, "
                    f"count(*) {window}, min(clicked) {window}, min(opened) {window} "
                    f"FROM (SELECT {_key_of('r')}, r.id, r.variant, r.created_at, r.sent_at, "
                    f"{_events_of('r', f'({CLICK})')} AS clicked, {_events_of('r', OPENED)} AS opened "
                    f"FROM {source} WHERE {where}) n ORDER BY {', '.join(KEY)}, sent_at, id")

    def recompute(keys: str) -> list[str]:
        return [f"DELETE FROM {TABLE} a USING ({keys}) k WHERE {_same_key('a', 'k')}", rows(keys)]

    pairs = "old_rows o JOIN new_rows r ON r.id = o.id"
    was, now, changed = sent_with_variant("o"), sent_with_variant("r"), _changed("o", "r")
    added, new_key = f"{now} AND NOT ({was})", _key_of("r")
    keys = (f"SELECT {_key_of('o')} FROM {pairs} WHERE {changed} AND {was} "
            f"UNION SELECT {_key_of('r')} FROM {pairs} WHERE {changed} AND {was} AND {now}")
    return {
        ("ab_delivery_insert", "delivery"): ("INSERT", [add("new_rows r", now)]),
        ("ab_delivery_update", "delivery"): ("UPDATE", [  # the dispatcher's updates take the ELSIF alone
            f"IF EXISTS (SELECT 1 FROM old_rows o WHERE {was}) THEN\n"
            + "".join(f"{statement};\n" for statement in [*recompute(keys), add(pairs, f"{added} AND ({new_key}) NOT IN ({keys})")])
            + f"ELSIF EXISTS (SELECT 1 FROM new_rows r WHERE {now}) THEN\n{add(pairs, added)};\nEND IF"]),
    }


def trigger_names(dialect: Dialect) -> list[tuple[str, str]]:
    """(name, table) of this table's triggers."""
    if sums_in_statement_triggers(dialect):
        return [*statement_triggers(), *event_trigger()]
    return list(row_triggers())


def rebuilds() -> list[str]:
    """The statements that compute every row from the deliveries and events."""
    return [f"DELETE FROM {TABLE}", rows(f"SELECT DISTINCT {_key_of('d')} FROM delivery d WHERE {sent_with_variant('d')}")]
