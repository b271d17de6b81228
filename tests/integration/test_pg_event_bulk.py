"""The PostgreSQL event writer's own encoding and decoding (storage.event_bulk_pg): the lists it sends as array
input text (array_text) read back in PostgreSQL as the values themselves (awkward text, NULLs among values,
microseconds and offsets, doubles to the last bit, large ids), and the lead rows it reads, JSON columns parsed by
storage.codec.json_value, are those SQLAlchemy's types read."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from db_fixtures import pg_url, postgres_available  # noqa: F401

from nurture.storage.database import make_engine, transaction
from nurture.storage.event_bulk import EventBulk
from nurture.storage.event_bulk_pg import PostgresEventBulk, array_text
from nurture.storage.migrate import upgrade

pytestmark = pytest.mark.postgres

TEXTS = ["", " ", "  padded  ", "NULL", "null", '"', '\\', '\\"', '"\\', "a,b", "{}", "{a,b}", "}", "{", "'", "''",
         "tab\there", "new\nline", "cr\rlf", "é ü ß 漢字 🎉", "\U0010ffff", "a\\nb", "x" * 5000,
         '{"json": [1, "two", null]}', "ROW(1)", "$1", "%s", "%(name)s"]
TIMES = [datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc), datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=timezone.utc),
         datetime(1970, 1, 1, tzinfo=timezone.utc) - timedelta(microseconds=1),
         datetime(2024, 3, 31, 2, 30, 0, 999999, tzinfo=ZoneInfo("Europe/Berlin")),
         datetime(2024, 10, 27, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"), fold=1),
         datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
         datetime(1, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)]
FLOATS = [0.0, -0.0, 1.0, 0.1 + 0.2, 1 / 3, -2.5, 1e-300, 5e-324, 1.7976931348623157e308, 123456789.123456789, 7, 0]
INTS = [0, 1, -1, 2**63 - 1, -(2**63), 42]


def _read(url: str, text: str, kind: str) -> list:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            return [value for (value,) in driver.execute(f"SELECT v FROM unnest(%s::{kind}[]) WITH ORDINALITY "
                                                         "AS t(v, n) ORDER BY n", (text,))]
    finally:
        engine.dispose()


def test_texts_read_back_as_they_were(pg_url):
    plain = [text for text in TEXTS if '"' not in text and "\\" not in text]  # written without escapes
    for values in ([*TEXTS, None, *reversed(TEXTS)], TEXTS, plain, ["only"], [None]):
        assert _read(pg_url, array_text(values, "text"), "text") == values


def test_times_read_back_as_the_same_instants(pg_url):
    utc = [value.astimezone(timezone.utc) for value in TIMES]
    back = _read(pg_url, array_text([*TIMES, None], "timestamptz"), "timestamptz")
    assert back[-1] is None
    assert [value.astimezone(timezone.utc) for value in back[:-1]] == utc
    assert [value.astimezone(timezone.utc) for value in _read(pg_url, array_text(TIMES, "timestamptz"),
                                                              "timestamptz")] == utc


def test_repeated_times_read_back_as_the_same_instants(pg_url):
    values = [*TIMES, None, *TIMES, TIMES[0], TIMES[3], None]
    back = _read(pg_url, array_text(values, "timestamptz"), "timestamptz")
    assert [value and value.astimezone(timezone.utc) for value in back] == [
        value and value.astimezone(timezone.utc) for value in values]
    utc = [value.astimezone(timezone.utc) for value in TIMES]
    assert array_text([*utc, *utc], "timestamptz") == "{" + ",".join(value.isoformat() for value in utc * 2) + "}"


def test_a_zones_repeated_hour_reads_back_as_its_two_instants(pg_url):
    # equal to Python (same wall time, same zone), an hour apart: written once each, not as one text
    first = datetime(2024, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    second = first.replace(fold=1)
    assert first == second
    back = _read(pg_url, array_text([first, second, first], "timestamptz"), "timestamptz")
    assert [value - back[0] for value in back] == [timedelta(0), timedelta(hours=1), timedelta(0)]


def test_doubles_read_back_to_the_last_bit(pg_url):
    back = _read(pg_url, array_text([*FLOATS, None], "float8"), "float8")
    assert back[-1] is None
    assert [value.hex() for value in back[:-1]] == [float(value).hex() for value in FLOATS]
    assert math.copysign(1.0, back[1]) == -1.0
    assert [value.hex() for value in _read(pg_url, array_text(FLOATS, "float8"), "float8")] == [
        float(value).hex() for value in FLOATS]


def test_ids_read_back_exactly(pg_url):
    assert _read(pg_url, array_text([*INTS, None], "bigint"), "bigint") == [*INTS, None]
    assert _read(pg_url, array_text(INTS, "bigint"), "bigint") == INTS


def test_an_empty_list_is_an_empty_array(pg_url):
    assert _read(pg_url, array_text([], "text"), "text") == []


def test_lead_rows_read_as_sqlalchemy_reads_them(pg_url):
    """Every column of the locked lead rows, with JSON that orjson parses and JSON only json.loads reads (a whole
    number beyond 64 bits, a number beyond a double's range, an unpaired surrogate escape), NULLs and time zones."""
    upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        with transaction(engine) as conn:
            conn.exec_driver_sql(
                "INSERT INTO lead (email, first_name, company_size, country, timezone, tags, fields, stage, score, "
                "unsubscribed_at, created_at, updated_at, stage_changed_at, score_state, source) VALUES "
                "('a@example.com', 'Ada', 250, 'DE', 'Europe/Berlin', '[\"vip\", \"x\"]', "
                "'{\"n\": [1, 2.5, null, {\"deep\": \"é\"}], \"big\": 123456789012345678901234567890}', 'mql', 42.5, "
                "'2024-05-01 14:00:00.000001+02', '2024-05-01 12:00:00+00', '2024-05-01 12:00:00+00', "
                "'2024-05-01 12:00:00+00', '[3, [[\"page_view\", 1.5]]]', 'ads'), "
                "('b@example.com', NULL, NULL, NULL, NULL, '[]', '{\"x\": 1e400, \"s\": \"\\ud800\"}', 'lead', 0, "
                "NULL, '2024-05-01 12:00:00+00', '2024-05-01 12:00:00+00', '2024-05-01 12:00:00+00', NULL, NULL)")
        for zone in (None, "Pacific/Chatham"):  # the session's time zone (+13:45 there) changes nothing read
            with transaction(engine) as conn:
                if zone is not None:
                    conn.exec_driver_sql(f"SET LOCAL TIME ZONE '{zone}'")
                fast, core = PostgresEventBulk(), EventBulk("postgresql")
                for wanted in (["a@example.com", "b@example.com", "missing@example.com"], ["a@example.com"],
                               ["b@example.com"]):
                    mine, theirs = fast.lock_leads(conn, wanted), core.lock_leads(conn, wanted)
                    assert sorted(mine) == sorted(theirs) == sorted(set(wanted) - {"missing@example.com"})
                    for email, row in theirs.items():
                        expected = dict(row._mapping)
                        got = {name: getattr(mine[email], name) for name in expected}
                        assert repr(got) == repr(expected)  # compared as text: types and infinities included
                        assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]
                assert fast.lock_leads(conn, ["a@example.com"])["a@example.com"].fields["big"] == (
                    123456789012345678901234567890)
    finally:
        engine.dispose()


def test_event_ids_recorded_already_are_named_and_new_ones_pass(pg_url):
    """An insert whose every row goes in reads nothing back; one with ids the table holds names exactly those."""
    from nurture.storage.event_bulk import AlreadyRecorded

    upgrade(pg_url)
    engine = make_engine(pg_url)
    at = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)

    def row(lead_id: int, external_id: str | None) -> dict:
        return dict(lead_id=lead_id, type="page_view", occurred_at=at, recorded_at=at, external_id=external_id,
                    campaign_id=None, step_key=None, delivery_id=None, properties={}, points=1.0)

    try:
        with transaction(engine) as conn:
            (lead_id,) = conn.exec_driver_sql(
                "INSERT INTO lead (email, tags, fields, stage, score, created_at, updated_at, stage_changed_at) "
                "VALUES ('a@example.com', '[]', '{}', 'lead', 0, now(), now(), now()) RETURNING id").one()
            bulk = PostgresEventBulk()
            bulk.insert_events(conn, [row(lead_id, "a"), row(lead_id, None), row(lead_id, "b")])
            bulk.insert_events(conn, [row(lead_id, None), row(lead_id, "c")])
            with pytest.raises(AlreadyRecorded) as refused:
                bulk.insert_events(conn, [row(lead_id, "d"), row(lead_id, "a"), row(lead_id, None), row(lead_id, "c")])
            assert refused.value.ids == {"a", "c"}
            with pytest.raises(AlreadyRecorded) as refused:
                bulk.insert_events(conn, [row(lead_id, "b")])
            assert refused.value.ids == {"b"}
    finally:
        engine.dispose()


def test_json_columns_read_through_the_engine_as_json_loads_reads_their_text(pg_url):
    """The engine's JSON columns on PostgreSQL (codec.json_bytes_value, psycopg's loader) hold what json.loads makes
    of the stored text: orjson's values where it reads them, json.loads's for what orjson reads otherwise or not."""
    upgrade(pg_url)
    engine = make_engine(pg_url)
    documents = ['[]', '{}', '["vip", "é 🎉"]', '{"big": 123456789012345678901234567890, "n": [1, 2.5, null, -0.0]}',
                 '{"x": 1e400, "s": "\\ud800", "a": 1, "a": 2}', '[18446744073709551615, -9223372036854775808, 0.1]']
    try:
        with transaction(engine) as conn:
            for number, document in enumerate(documents):
                conn.exec_driver_sql(
                    "INSERT INTO lead (email, tags, fields, stage, score, created_at, updated_at, stage_changed_at) "
                    "VALUES (%(email)s, '[]', %(fields)s, 'lead', 0, now(), now(), now())",
                    {"email": f"j{number}@example.com", "fields": document})
        with transaction(engine) as conn:
            rows = conn.execute(sa.text("SELECT email, fields, fields::text AS stored FROM lead ORDER BY email")
                                .columns(sa.column("email"), sa.column("fields", sa.JSON), sa.column("stored"))).all()
        assert len(rows) == len(documents)
        for row in rows:
            expected = json.loads(row.stored)
            assert repr(row.fields) == repr(expected)
            assert json.dumps(row.fields) == json.dumps(expected)
    finally:
        engine.dispose()
