"""CSV lead import against real databases: good rows, bad rows with their file line numbers, upserts."""

from __future__ import annotations

from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path

import pytest
import sqlalchemy as sa
from db_fixtures import engine, migrated_url, postgres_available, postgres_template  # noqa: F401

from nurture.application.import_leads import import_leads_csv
from nurture.application.override_stage import override_stage
from nurture.clock import SYSTEM_CLOCK
from nurture.core.lifecycle import FUNNEL
from nurture.definitions.loader import Catalog
from nurture.errors import InvalidInput
from nurture.storage.database import session
from nurture.storage.models import Lead, StageChange

HEADER = "email,first_name,last_name,company,title,industry,company_size,country,timezone,stage,tags,plan\n"


def write(tmp_path: Path, text: str, name: str = "leads.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def leads(engine) -> dict[str, Lead]:
    with session(engine, read_only=True) as db:
        return {lead.email: lead for lead in db.execute(sa.select(Lead)).scalars()}


def stage_changes(engine) -> list[tuple[str | None, str, str]]:
    with session(engine, read_only=True) as db:
        rows = db.execute(sa.select(StageChange).order_by(StageChange.id)).scalars()
        return [(change.from_stage, change.to_stage, change.actor) for change in rows]


def test_good_rows_are_normalized_and_stored(engine, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER
                 + ' Ada@Example.com ,Ada,Lovelace,Acme,CTO,software,"1,200",gb,Europe/London,MQL,vip; beta ;vip,pro\n'
                 + "grace@example.com,Grace,,,,,,,,,,\n")
    report = import_leads_csv(engine, path, clock=SYSTEM_CLOCK)
    assert (report.inserted, report.updated, report.rejected) == (2, 0, [])
    stored = leads(engine)
    ada = stored["ada@example.com"]
    assert (ada.first_name, ada.company, ada.company_size, ada.country) == ("Ada", "Acme", 1200, "GB")
    assert (ada.timezone, ada.stage, ada.tags, ada.fields) == ("Europe/London", "mql", ["vip", "beta"], {"plan": "pro"})
    grace = stored["grace@example.com"]
    assert (grace.last_name, grace.stage, grace.tags, grace.fields) == (None, "lead", [], {})
    assert ada.created_at.tzinfo is not None and ada.score == 0
    assert report.mql_lead_ids == [ada.id]
    assert stage_changes(engine) == [(None, "mql", "import")]



def test_cells_repeated_down_a_column_are_judged_alike_on_every_row(engine, tmp_path: Path) -> None:
    rows = "".join(f"l{i}@example.com,L,,,,,{size},{country},Europe/Paris,mql,vip;beta,\n"
                   for i, (size, country) in enumerate([("50", "fr"), ("lots", "fr"), ("50", "Atlantis"),
                                                        ("50", "fr"), ("lots", "Atlantis")]))
    report = import_leads_csv(engine, write(tmp_path, HEADER + rows), clock=SYSTEM_CLOCK)
    assert report.inserted == 2 and [line for line, _ in report.rejected] == [3, 4, 6]
    assert "company_size" in report.rejected[2][1] and "country" in report.rejected[2][1]
    stored = leads(engine)
    assert [(stored[e].company_size, stored[e].country, stored[e].tags) for e in ("l0@example.com", "l3@example.com")] \
        == [(50, "FR", ["vip", "beta"])] * 2

def test_each_bad_row_is_reported_with_its_line_and_the_rest_imported(engine, tmp_path: Path) -> None:
    path = write(tmp_path, HEADER
                 + "ok1@example.com,,,,,,,,,,,\n"                       # line 2
                 + "not-an-email,,,,,,,,,,,\n"                          # 3
                 + ",Nameless,,,,,,,,,,\n"                              # 4
                 + "size@example.com,,,,,,lots,,,,,\n"                  # 5
                 + "stage@example.com,,,,,,,,,hot,,\n"                  # 6
                 + "\n"                                                 # 7: blank lines are skipped
                 + "tz@example.com,,,,,,,,Mars/Olympus,,,\n"            # 8
                 + "country@example.com,,,,,,,USA,,,,\n"                # 9
                 + "wide@example.com,,,,,,,,,,,,surplus\n"              # 10
                 + "two@example.com,,,,,,-5,U,,,,\n"                    # 11
                 + "ok2@example.com,,,,,,,,,,,\n")                      # 12
    report = import_leads_csv(engine, path, clock=SYSTEM_CLOCK)
    assert report.inserted == 2 and report.updated == 0
    rejected = dict(report.rejected)
    assert list(rejected) == [3, 4, 5, 6, 8, 9, 10, 11]
    assert "invalid email 'not-an-email'" in rejected[3]
    assert "email is empty" in rejected[4]
    assert "company_size must be a whole number" in rejected[5]
    assert "unknown stage 'hot'" in rejected[6]
    assert "unknown timezone 'Mars/Olympus'" in rejected[8]
    assert "country must be a 2-letter ISO code" in rejected[9]
    assert "13 values but the header has 12 columns" in rejected[10]
    assert "company_size must not be negative" in rejected[11] and "country" in rejected[11]
    assert set(leads(engine)) == {"ok1@example.com", "ok2@example.com"}


def test_multi_line_quoted_fields_keep_line_numbers_right(engine, tmp_path: Path) -> None:
    path = write(tmp_path, "email,notes\n"
                 + 'a@example.com,"first line\nsecond line\nthird line"\n'   # lines 2-4
                 + "bad-email,x\n"                                            # 5
                 + 'b@example.com,"one\r\ntwo"\r\n'                           # 6-7
                 + "also bad,y\n")                                            # 8
    report = import_leads_csv(engine, path, clock=SYSTEM_CLOCK)
    assert [line for line, _ in report.rejected] == [5, 8]
    assert leads(engine)["a@example.com"].fields == {"notes": "first line\nsecond line\nthird line"}


def test_new_leads_take_ids_in_the_files_order_and_each_batch_its_time(engine, tmp_path: Path) -> None:
    first = datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=timezone.utc)
    later = datetime(2026, 3, 3, 10, 0, 0, 654321, tzinfo=timezone.utc)
    import_leads_csv(engine, write(tmp_path, "email,stage\nzed@example.com,\nada@example.com,mql\n", "one.csv"),
                     clock=lambda: first)
    before = leads(engine)
    assert before["zed@example.com"].id < before["ada@example.com"].id
    # a batch of new and existing leads: the existing keep their ids, the new ones follow in the file's order
    report = import_leads_csv(engine, write(tmp_path, "email,stage,company_size\nyan@example.com,,7\n"
                                                      "zed@example.com,mql,\nbea@example.com,sql,\n"
                                                      "ada@example.com,,12\ncid@example.com,,\n", "two.csv"),
                              clock=lambda: later, batch_size=5000)
    assert (report.inserted, report.updated) == (3, 2)
    stored = leads(engine)
    assert [lead.email for lead in sorted(stored.values(), key=lambda lead: lead.id)] == [
        "zed@example.com", "ada@example.com", "yan@example.com", "bea@example.com", "cid@example.com"]
    assert {email: stored[email].id for email in before} == {email: lead.id for email, lead in before.items()}
    zed, ada, yan = stored["zed@example.com"], stored["ada@example.com"], stored["yan@example.com"]
    assert (zed.created_at, zed.updated_at, zed.stage_changed_at, zed.stage) == (first, later, later, "mql")
    assert (ada.created_at, ada.updated_at, ada.stage_changed_at, ada.company_size) == (first, later, first, 12)
    assert (yan.created_at, yan.updated_at, yan.stage_changed_at, yan.company_size) == (later, later, later, 7)
    assert sorted(report.mql_lead_ids) == [zed.id]


def test_upsert_updates_keeps_blanks_merges_fields_and_tracks_stage(engine, tmp_path: Path) -> None:
    first = write(tmp_path, HEADER + "ada@example.com,Ada,Lovelace,Acme,CTO,,50,GB,,lead,a;b,pro\n", "one.csv")
    import_leads_csv(engine, first, clock=SYSTEM_CLOCK)
    second = write(tmp_path, "email,title,company_size,stage,tags,seats\n"
                   + "ADA@example.com,Countess,,mql,,10\n"
                   + "new@example.com,Dev,5,,,\n", "two.csv")
    report = import_leads_csv(engine, second, clock=SYSTEM_CLOCK)
    assert (report.inserted, report.updated) == (1, 1)
    ada = leads(engine)["ada@example.com"]
    assert (ada.first_name, ada.title, ada.company_size, ada.country) == ("Ada", "Countess", 50, "GB")
    assert (ada.stage, ada.tags, ada.fields) == ("mql", ["a", "b"], {"plan": "pro", "seats": "10"})
    assert ada.stage_changed_at > ada.created_at
    assert report.mql_lead_ids == [ada.id]
    assert stage_changes(engine) == [("lead", "mql", "import")]
    # re-importing changes nothing and enters nobody into mql again
    again = import_leads_csv(engine, second, clock=SYSTEM_CLOCK)
    assert (again.inserted, again.updated, again.mql_lead_ids) == (0, 2, [])
    assert len(stage_changes(engine)) == 1


@pytest.mark.parametrize("batch_size", [1, 2, 5000])
def test_the_last_row_of_an_email_counts_and_the_earlier_ones_are_reported(engine, tmp_path: Path,
                                                                            batch_size: int) -> None:
    path = write(tmp_path, "email,title,stage,plan\n"
                 + "a@example.com,first,sql,gold\n"     # line 2: skipped
                 + "b@example.com,only,lead,\n"         # 3
                 + "A@example.com,second,mql,\n"        # 4: skipped (the same email, cleaned)
                 + "not-an-email,x,,\n"                 # 5: rejected, and no email to repeat
                 + " a@EXAMPLE.com ,third,,\n")         # 6: counts, blanks and all
    report = import_leads_csv(engine, path, batch_size=batch_size, clock=SYSTEM_CLOCK)
    assert (report.inserted, report.updated, report.skipped) == (2, 0, 2)
    assert [line for line, _ in report.rejected] == [5]
    assert report.repeated == {6: [2, 4]}
    a = leads(engine)["a@example.com"]
    assert (a.title, a.stage, a.fields) == ("third", "lead", {})  # nothing of lines 2 and 4
    assert stage_changes(engine) == []


def test_the_last_row_counts_even_when_it_is_rejected(engine, tmp_path: Path) -> None:
    path = write(tmp_path, "email,country\n"
                 + "a@example.com,DE\n"
                 + "a@example.com,Germany\n")
    report = import_leads_csv(engine, path, clock=SYSTEM_CLOCK)
    assert report.repeated == {3: [2]} and [line for line, _ in report.rejected] == [3]
    assert report.imported == 0 and leads(engine) == {}


def test_rows_that_cannot_be_read_repeat_nothing(engine, tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"email,first_name\n"
                     b"a@example.com,Ada\n"
                     b"a@example.com,Fran\xe7oise\n"    # not UTF-8: rejected, it does not count as a's last row
                     b"b@example.com,Bo\n")
    report = import_leads_csv(engine, path, clock=SYSTEM_CLOCK)
    assert report.repeated == {} and [line for line, _ in report.rejected] == [3]
    assert leads(engine)["a@example.com"].first_name == "Ada"


def test_an_email_and_its_internationalized_form_are_one_email(engine, tmp_path: Path) -> None:
    path = write(tmp_path, "email,first_name\n"
                 + "zoe@bücher.example,Zoé\n"
                 + "ZOE@xn--bcher-kva.example,Zoe\n")
    report = import_leads_csv(engine, path, clock=SYSTEM_CLOCK)
    assert report.repeated == {3: [2]}
    assert leads(engine)["zoe@xn--bcher-kva.example"].first_name == "Zoe"


# -- stages from the file: forward only ----------------------------------------------------------------------------

STAGED = {  # email -> the stage the lead is at before the second import
    "customer@example.com": "customer", "opportunity@example.com": "opportunity", "sql@example.com": "sql",
    "mql@example.com": "mql", "lead@example.com": "lead", "recycled@example.com": "recycled",
    "disqualified@example.com": "disqualified", "blank@example.com": "recycled",
}


def stage_leads(engine, tmp_path: Path) -> None:
    """The leads of STAGED at their stages: funnel stages by a first import, the others by an admin's override."""
    first = write(tmp_path, "email,stage\n" + "".join(
        f"{email},{stage if stage in FUNNEL else 'sql'}\n" for email, stage in STAGED.items()), "first.csv")
    assert import_leads_csv(engine, first, clock=SYSTEM_CLOCK).imported == len(STAGED)
    for email, stage in STAGED.items():
        if stage not in FUNNEL:
            override_stage(engine, Catalog(), email=email, stage=stage, reason="sales", now=SYSTEM_CLOCK())


def test_a_stage_from_a_file_moves_a_lead_only_forward(engine, tmp_path: Path) -> None:
    stage_leads(engine, tmp_path)
    before = len(stage_changes(engine))
    second = write(tmp_path, "email,stage,title\n"
                   + "customer@example.com,mql,CEO\n"             # 2: backwards, the title still applies
                   + "opportunity@example.com,lead,\n"            # 3: backwards
                   + "sql@example.com,opportunity,\n"             # 4: forward
                   + "mql@example.com,MQL,\n"                     # 5: the same stage: nothing to say
                   + "lead@example.com,customer,\n"               # 6: forward, over several stages
                   + "recycled@example.com,mql,\n"                # 7: kept
                   + "disqualified@example.com,customer,\n"       # 8: kept
                   + "blank@example.com,,\n"                      # 9: no stage given: kept, nothing to say
                   + "new@example.com,recycled,\n"                # 10: never from a file: a new lead at lead
                   + "newsql@example.com,sql,\n"                  # 11: a new lead starts where the file says
                   + "sql@example.com,disqualified,\n", "second.csv")  # 12: repeats line 4, which is skipped
    report = import_leads_csv(engine, second, clock=SYSTEM_CLOCK)
    assert (report.inserted, report.updated, report.repeated, report.rejected) == (2, 8, {12: [4]}, [])
    assert report.stage_not_applied == {
        "would move backwards: customer → mql": [2],
        "would move backwards: opportunity → lead": [3],
        "set by rules or sales: recycled; given mql": [7],
        "set by rules or sales: disqualified; given customer": [8],
        "only rules or sales set recycled": [10],
        "only rules or sales set disqualified": [12],
    }
    stored = leads(engine)
    assert {email: stored[email].stage for email in STAGED} == {**STAGED, "lead@example.com": "customer"}
    assert (stored["new@example.com"].stage, stored["newsql@example.com"].stage) == ("lead", "sql")
    assert stored["customer@example.com"].title == "CEO"
    assert stage_changes(engine)[before:] == [("lead", "customer", "import"), (None, "sql", "import")]
    # the same file again: every stage stays, every refusal is said again
    again = import_leads_csv(engine, second, clock=SYSTEM_CLOCK)
    assert again.stage_not_applied == report.stage_not_applied
    assert len(stage_changes(engine)) == before + 2
    assert {email: lead.stage for email, lead in leads(engine).items()} == {
        email: lead.stage for email, lead in stored.items()}


def test_header_names_are_matched_loosely_and_bom_and_crlf_accepted(engine, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffE-mail,First Name,COUNTRY,Lead Source\r\nada@example.com,Ada,de,webinar\r\n"
                     .replace("E-mail", "Email").encode("utf-8"))
    report = import_leads_csv(engine, path, clock=SYSTEM_CLOCK)
    assert report.rejected == []
    ada = leads(engine)["ada@example.com"]
    assert (ada.first_name, ada.country, ada.fields) == ("Ada", "DE", {"Lead Source": "webinar"})


def test_lines_that_are_not_utf8_are_rejected(engine, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"email,first_name\nok@example.com,Ada\nfr@example.com,Fran\xe7oise\nok2@example.com,Bo\n")
    report = import_leads_csv(engine, path, clock=SYSTEM_CLOCK)
    assert report.rejected == [(3, "not UTF-8 text (save the file as UTF-8)")]
    assert report.inserted == 2


def test_progress_is_reported_in_bytes(engine, tmp_path: Path) -> None:
    path = write(tmp_path, "email\n" + "".join(f"l{i}@example.com\n" for i in range(10)))
    seen: list[tuple[int, int]] = []
    import_leads_csv(engine, path, batch_size=3, on_progress=lambda done, total: seen.append((done, total)),
                     clock=SYSTEM_CLOCK)
    size = path.stat().st_size
    assert seen[-1] == (size, size)
    assert len(seen) == 4 and all(a[0] <= b[0] for a, b in pairwise(seen))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("first_name,company\nAda,Acme\n", "no email column"),
        ("email,Email\na@example.com,b@example.com\n", "appears twice"),
    ],
)
def test_unusable_files_are_refused(engine, tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        import_leads_csv(engine, write(tmp_path, content), clock=SYSTEM_CLOCK)


def test_a_missing_file_is_refused(engine, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        import_leads_csv(engine, tmp_path / "missing.csv", clock=SYSTEM_CLOCK)


def test_with_scoring_rules_the_stored_scores_count_the_fit(engine, tmp_path: Path) -> None:
    from nurture.definitions.scoring import validate_scoring
    from nurture.definitions.yamlsource import parse_yaml

    rules, problems = validate_scoring(parse_yaml(
        "fit:\n  - {label: big, when: {company_size: {gte: 200}}, points: 15}\n"
        "  - {label: ops, when: {title: {contains: ops}}, points: 2.5}\n", "scoring.yaml"))
    assert not problems
    path = write(tmp_path, "email,company_size,title\na@example.com,350,Head of Ops\nb@example.com,10,\n"
                           "c@example.com,,ops lead\n")
    import_leads_csv(engine, path, rules=rules, batch_size=2, clock=SYSTEM_CLOCK)
    assert {email: lead.score for email, lead in leads(engine).items()} == {
        "a@example.com": 17.5, "b@example.com": 0.0, "c@example.com": 2.5}
    import_leads_csv(engine, write(tmp_path, "email,company_size\nb@example.com,900\n", "again.csv"), rules=rules,
                     clock=SYSTEM_CLOCK)
    assert leads(engine)["b@example.com"].score == 15.0
    import_leads_csv(engine, write(tmp_path, "email,company_size\nd@example.com,900\n", "plain.csv"),
                     clock=SYSTEM_CLOCK)
    assert leads(engine)["d@example.com"].score == 0.0  # without rules, scores are left to the nightly rescoring


def test_json_columns_read_back_as_json_loads_reads_them(engine) -> None:
    fields = {"big": 10**30, "ratio": 0.1, "text": "é\U0001f389 \"quoted\"", "list": [1, None, True, {"a": -0.0}]}
    odd = {"nan": float("nan")} if engine.dialect.name == "sqlite" else {}  # PostgreSQL's JSON refuses NaN
    with engine.begin() as conn:
        conn.execute(sa.insert(Lead.__table__).values(
            email="json@example.com", tags=["vip", "é"], fields={**fields, **odd}, stage="lead",
            score=0.0, created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
            updated_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
            stage_changed_at=datetime(2026, 1, 1, tzinfo=timezone.utc)))
    stored = leads(engine)["json@example.com"]
    nan = stored.fields.pop("nan", None)
    assert stored.fields == fields and type(stored.fields["big"]) is int and (nan != nan or not odd)
    assert stored.tags == ["vip", "é"]
