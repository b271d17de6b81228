"""``ab_lead_step`` (migration ``0010_abrollup``): per lead and A/B step, the lead's sent emails of the step with a
variant: the first one (by ``sent_at``, then id: its id, variant and creation time), how many there are (``sends``),
and when the first click, and the first open or click, was recorded on any of them.

An A/B test on clicks or opens counts, per variant, the leads whose first email of the step in the period had it, and
of those the ones that clicked (opened) one of their emails of the step in the period before the as-of time
(:func:`nurture.core.abtest.count_goal`). For a lead with one such email (nearly every lead) that is this table's row:
its email is in the period or not, and its first click is before the as-of time or not. So the test reads the index
of the table for those leads (:mod:`nurture.storage.experiments`), and counts the few leads with several emails of
the step from their emails, as before.

The SQL that computes a lead's row lives here once, for the triggers that keep the table (a delivery that becomes,
or stops being, a sent email with a variant recomputes its lead's row; an open or click moves the first times
earlier) and for :func:`rebuilds` (``nurture db rebuild-rollups``), so the two agree. SQLite runs the triggers per
row; PostgreSQL once per statement, on the statement's rows (transition tables), as the other rollups do there.
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


def _first_event(types: str) -> str:
    return (f"(SELECT min(e.occurred_at) FROM delivery g JOIN engagement_event e ON e.delivery_id = g.id "
            f"WHERE g.lead_id = f.lead_id AND g.campaign_id = f.campaign_id AND g.step_id = f.step_id "
            f"AND {sent_with_variant('g')} AND e.type IN {types})")


def rows(where: str) -> str:
    """INSERT the rows of the (lead, step)s whose emails ``delivery d`` ``where`` selects, computed from their
    deliveries and events (the rows must not be there)."""
    keys = ", ".join(f"d.{k}" for k in KEY)
    return (f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "
            "SELECT f.campaign_id, f.step_id, f.lead_id, f.id, f.variant, f.created_at, f.sent_at, f.sends, "
            f"{_first_event(f'({CLICK})')}, {_first_event(OPENED)} "
            "FROM (SELECT d.campaign_id, d.step_id, d.lead_id, d.id, d.variant, d.created_at, d.sent_at, "
            f"row_number() OVER (PARTITION BY {keys} ORDER BY d.sent_at, d.id) AS nth, "
            f"count(*) OVER (PARTITION BY {keys}) AS sends "
            f"FROM delivery d WHERE {sent_with_variant('d')} AND {where}) f WHERE f.nth = 1")


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


def _earlier(column: str, value: str) -> str:
    return f"CASE WHEN {column} IS NULL OR {value} < {column} THEN {value} ELSE {column} END"


def row_triggers() -> dict[tuple[str, str], tuple[str, str, list[str]]]:
    """SQLite: (name, table) -> (event, condition, statements) of the row triggers."""
    def recompute(row: str, only_if: str = "1 = 1") -> list[str]:
        own = " AND ".join(f"{k} = {row}.{k}" for k in KEY)
        return [f"DELETE FROM {TABLE} WHERE {own} AND {only_if}",
                rows(f"{_same_key('d', row)} AND {only_if}")]

    moved = " OR ".join(f"OLD.{k} <> NEW.{k}" for k in KEY)
    def of(column: str) -> str:
        return f"(SELECT d.{column} FROM delivery d WHERE d.id = NEW.delivery_id AND {sent_with_variant('d')})"

    event = (f"UPDATE {TABLE} SET opened_at = {_earlier('opened_at', 'NEW.occurred_at')}, "
             f"clicked_at = CASE WHEN NEW.type = {CLICK} THEN {_earlier('clicked_at', 'NEW.occurred_at')} "
             "ELSE clicked_at END WHERE " + " AND ".join(f"{k} = {of(k)}" for k in KEY))
    return {
        ("ab_delivery_insert", "delivery"): ("INSERT", sent_with_variant("NEW"), recompute("NEW")),
        ("ab_delivery_update", "delivery"): (f"UPDATE OF {', '.join(WATCHED)}", _changed("OLD", "NEW"),
                                             recompute("OLD", f"({moved})") + recompute("NEW")),
        ("ab_engagement_event_insert", "engagement_event"): (
            "INSERT", f"NEW.delivery_id IS NOT NULL AND NEW.type IN {OPENED}", [event]),
    }


def statement_triggers() -> dict[tuple[str, str], tuple[str, list[str]]]:
    """PostgreSQL: (name, table) -> (event, statements) of the statement triggers (``new_rows``, ``old_rows``)."""
    def recompute(keys: str) -> list[str]:
        listed = ", ".join(KEY)
        return [f"DELETE FROM {TABLE} a USING ({keys}) k WHERE {_same_key('a', 'k')}",
                rows(f"({', '.join(f'd.{k}' for k in KEY)}) IN ({keys})") + f" ORDER BY {listed}"]

    def keys_of(row: str, source: str, where: str) -> str:
        return f"SELECT DISTINCT {', '.join(f'{row}.{k}' for k in KEY)} FROM {source} WHERE {where}"

    pairs = "old_rows o JOIN new_rows r ON r.id = o.id"
    changed = _changed("o", "r")
    event = (f"UPDATE {TABLE} a SET opened_at = least(a.opened_at, x.opened), "
             "clicked_at = least(a.clicked_at, x.clicked) FROM (SELECT d.campaign_id, d.step_id, d.lead_id, "
             f"min(e.occurred_at) AS opened, min(CASE WHEN e.type = {CLICK} THEN e.occurred_at END) AS clicked "
             f"FROM new_rows e JOIN delivery d ON d.id = e.delivery_id WHERE e.type IN {OPENED} "
             f"AND {sent_with_variant('d')} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3) x WHERE {_same_key('a', 'x')}")
    return {
        ("ab_delivery_insert", "delivery"): ("INSERT", recompute(keys_of("r", "new_rows r", sent_with_variant("r")))),
        ("ab_delivery_update", "delivery"): ("UPDATE", recompute(
            f"{keys_of('o', pairs, changed)} UNION {keys_of('r', pairs, changed)}")),
        ("ab_engagement_event_insert", "engagement_event"): ("INSERT", [event]),
    }


def trigger_names(dialect: Dialect) -> list[tuple[str, str]]:
    """(name, table) of this table's triggers."""
    return list(statement_triggers() if sums_in_statement_triggers(dialect) else row_triggers())


def rebuilds() -> list[str]:
    """The statements that compute every row from the deliveries and events."""
    return [f"DELETE FROM {TABLE}", rows("1 = 1")]
