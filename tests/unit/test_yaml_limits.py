"""Hostile and odd YAML in definition files: every file is read with limits (size, values once aliases are expanded,
nesting depth, aliases) and a file past one is a ``path:line`` problem found in milliseconds with bounded memory,
whichever definition file it is (campaigns, policy, scoring, sales rules, a lead file for preview or simulate)."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from nurture.application.authoring import check, load_lead_file
from nurture.definitions.yamlsource import MAX_ALIASES, MAX_BYTES, MAX_DEPTH, MAX_VALUES, load_yaml, parse_yaml
from nurture.errors import InvalidInput

TOO_MANY = f"the file holds more than {MAX_VALUES:,} values once its aliases are expanded: refusing to read it"
TOO_DEEP = f"mappings and lists are nested more than {MAX_DEPTH} levels deep (aliases expanded): refusing to read it"
TOO_LARGE = f"the file is larger than {MAX_BYTES:,} bytes, the most a definition file may be: refusing to read it"


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": each level a list of ``width`` aliases of the level before (9**9 values)."""
    lines = ["lol0: &lol0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"lol{level}: &lol{level} [" + ", ".join([f"*lol{level - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nid: bomb\nname: Bomb\nsteps: *lol{levels - 1}\n"


def merge_bomb(levels: int = 9, width: int = 9) -> str:
    """The same with merge keys: each mapping merges ``width`` copies of the one before."""
    lines = ["m0: &m0 {a: 1, b: 2}"]
    for level in range(1, levels):
        lines.append(f"m{level}: &m{level} {{<<: [" + ", ".join([f"*m{level - 1}"] * width) + "]}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def bounded() -> Iterator[None]:
    """The test's parsing must take under a second of CPU and a few megabytes (a bomb takes minutes and gigabytes).
    CPU time, not the wall clock, so that a loaded machine cannot fail it."""
    tracemalloc.start()
    started = time.process_time()
    yield
    elapsed = time.process_time() - started
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0, f"took {elapsed:.2f}s"
    assert peak < 20 * 1024 * 1024, f"peak memory {peak / 1024 / 1024:.1f} MiB"


@pytest.mark.usefixtures("bounded")
def test_an_alias_bomb_is_refused_at_the_alias_that_passes_the_limit() -> None:
    doc = parse_yaml(alias_bomb(), "bomb.yaml")
    # level 6 is the first holding more than 100,000 values (9**6); the count passes the limit at its aliases
    assert [str(p) for p in doc.problems] == [f"bomb.yaml:6: {TOO_MANY}"]
    assert doc.data is None


@pytest.mark.usefixtures("bounded")
def test_a_merge_key_bomb_is_refused() -> None:
    assert [str(p) for p in parse_yaml(merge_bomb(), "m.yaml").problems] == [f"m.yaml:6: {TOO_MANY}"]


def test_merged_keys_are_kept_once_and_a_mappings_own_key_wins_without_a_duplicate_problem() -> None:
    doc = parse_yaml("base: &b {wait: 2d, goto: end}\nmore: &m {wait: 5d, id: z}\n"
                     "step:\n  <<: [*b, *m]\n  wait: 3d\n", "x.yaml")
    assert doc.problems == []
    assert doc.data["step"] == {"goto": "end", "id": "z", "wait": "3d"}


def test_a_merge_of_something_else_than_a_mapping_is_a_problem_at_its_line() -> None:
    doc = parse_yaml("step:\n  id: a\n  <<: [1]\n", "x.yaml")
    assert [str(p) for p in doc.problems] == ["x.yaml:3: YAML syntax error: a merge key (<<) takes a mapping or a list "
                                              "of mappings"]


@pytest.mark.usefixtures("bounded")
def test_deep_nesting_is_refused_at_the_level_past_the_limit() -> None:
    text = "id: deep\nsteps:\n" + "".join(" " * level + "-\n" for level in range(1, 500)) + "\n"
    assert [str(p) for p in parse_yaml(text, "d.yaml").problems] == [f"d.yaml:{MAX_DEPTH + 2}: {TOO_DEEP}"]
    flow = "a: " + "{a: " * 10_000 + "}" * 10_000 + "\n"  # past Python's recursion limit, were it followed
    assert [str(p) for p in parse_yaml(flow, "f.yaml").problems] == [f"f.yaml:1: {TOO_DEEP}"]


def test_deeply_nested_flow_lists_are_refused_fast() -> None:
    started = time.process_time()  # PyYAML looks up to 1,024 characters ahead for a flow key: about 0.15 s here
    doc = parse_yaml("a: " + "[" * 500_000 + "]" * 500_000 + "\n", "f.yaml")
    assert [str(p) for p in doc.problems] == [f"f.yaml:1: {TOO_DEEP}"]
    assert time.process_time() - started < 1.0  # CPU time: a loaded machine cannot fail it


def test_depth_counts_what_aliases_stand_for() -> None:
    lines = ["l0: &l0 [x]"] + [f"l{n}: &l{n} [*l{n - 1}]" for n in range(1, MAX_DEPTH + 5)]
    doc = parse_yaml("\n".join(lines) + "\n", "a.yaml")
    # line n + 1 holds l<n>, n + 3 levels deep once expanded (the top mapping, its list, then l<n-1>'s n + 1 levels)
    assert [str(p) for p in doc.problems] == [f"a.yaml:{MAX_DEPTH - 1}: {TOO_DEEP}"]


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    doc = parse_yaml("steps: &loop\n  - id: a\n  - *loop\n", "r.yaml")
    assert [str(p) for p in doc.problems] == ["r.yaml:3: alias '*loop' refers to a node that contains it"]


def test_too_many_aliases_are_refused() -> None:
    text = "a: &a x\nlist:\n" + "  - *a\n" * (MAX_ALIASES + 1)
    assert [str(p) for p in parse_yaml(text, "x.yaml").problems] == [
        f"x.yaml:{MAX_ALIASES + 3}: the file uses more than {MAX_ALIASES:,} aliases"]
    assert parse_yaml("a: &a x\nlist:\n" + "  - *a\n" * MAX_ALIASES, "x.yaml").problems == []


@pytest.mark.usefixtures("bounded")
def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_text("id: huge\nname: " + "x" * MAX_BYTES + "\n", encoding="utf-8")
    assert [str(p) for p in load_yaml(huge).problems] == [f"{huge}:1: {TOO_LARGE}"]
    assert [str(p) for p in parse_yaml(huge.read_text(), "t.yaml").problems] == [f"t.yaml:1: {TOO_LARGE}"]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.usefixtures("bounded")
def test_an_endless_file_is_read_no_further_than_the_limit() -> None:
    assert [str(p) for p in load_yaml("/dev/zero").problems] == [f"/dev/zero:1: {TOO_LARGE}"]


def test_a_file_at_the_limits_is_read() -> None:
    width = 9
    lines = ["l0: &l0 [" + ", ".join(["x"] * width) + "]"]
    lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]" for n in range(1, 5)]  # 9**5 < 100,000
    doc = parse_yaml("\n".join(lines) + "\n", "ok.yaml")
    assert doc.problems == [] and len(doc.data["l4"]) == width
    nested = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert parse_yaml(nested, "n.yaml").problems == []


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "campaigns").mkdir()
    (tmp_path / "templates").mkdir()
    return tmp_path


@pytest.mark.parametrize("name", ["bomb.yaml", "policy.yaml", "scoring.yaml", "sales.yaml"])
@pytest.mark.usefixtures("bounded")
def test_check_refuses_a_bomb_in_every_kind_of_definition_file(project: Path, name: str) -> None:
    (project / "campaigns" / name).write_text(alias_bomb(), encoding="utf-8")
    problems = [str(p) for p in check(Path("campaigns"), Path("templates")).problems]
    assert problems == [f"campaigns/{name}:6: {TOO_MANY}"]


@pytest.mark.usefixtures("bounded")
def test_a_bomb_as_a_lead_file_is_invalid_input(tmp_path: Path) -> None:
    lead = tmp_path / "lead.yaml"
    lead.write_text("email: dana@example.com\n" + alias_bomb(), encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        load_lead_file(lead)
    assert str(caught.value) == f"cannot read lead file {lead}:7: {TOO_MANY}"


DIGITS = "1" * 5000
LONG = "'" + "1" * 40 + "...' (5,000 characters)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(f"n: {DIGITS}\n", f"v.yaml:1: the value {LONG} cannot be read as int: Exceeds the limit "
                     "(4300 digits) for integer string conversion: value has 5000 digits", id="5000-digit-integer"),
        pytest.param(f"a: 1\n? {DIGITS}\n: x\n", f"v.yaml:2: the value {LONG} cannot be read as int", id="5000-digit-key"),
        pytest.param("a: 1\nn: !!timestamp 2020-13-45\n", "v.yaml:2: the value '2020-13-45' cannot be read as "
                     "timestamp: month must be in 1..12", id="timestamp-month-13"),
        pytest.param("n: 2020-02-30\n", "v.yaml:1: the value '2020-02-30' cannot be read as timestamp: day is out of "
                     "range for month", id="implicit-date-february-30"),
        pytest.param("list:\n  - !!int abc\n", "v.yaml:2: the value 'abc' cannot be read as int: invalid literal",
                     id="int-abc"),
        pytest.param("n: !!float abc\n", "v.yaml:1: the value 'abc' cannot be read as float: could not convert",
                     id="float-abc"),
        pytest.param("n: !!bool maybe\n", "v.yaml:1: the value 'maybe' cannot be read as bool", id="bool-maybe"),
        pytest.param("n: !!int _\n", "v.yaml:1: the value '_' cannot be read as int", id="int-underscore"),
    ],
)
def test_a_value_yaml_cannot_make_is_a_problem_at_its_line(text: str, expected: str) -> None:
    problems = [str(p) for p in parse_yaml(text, "v.yaml").problems]
    assert len(problems) == 1 and problems[0].startswith(expected), problems


@pytest.mark.parametrize("name", ["odd.yaml", "policy.yaml", "scoring.yaml", "sales.yaml"])
def test_check_reports_a_value_yaml_cannot_make_in_every_kind_of_definition_file(project: Path, name: str) -> None:
    (project / "campaigns" / name).write_text(f"id: odd\nname: Odd\npriority: {DIGITS}\n", encoding="utf-8")
    problems = [str(p) for p in check(Path("campaigns"), Path("templates")).problems]
    assert len(problems) == 1 and problems[0].startswith(f"campaigns/{name}:3: the value {LONG} cannot be read as int")


def test_a_lead_file_with_a_value_yaml_cannot_make_is_invalid_input(tmp_path: Path) -> None:
    lead = tmp_path / "lead.yaml"
    lead.write_text("email: dana@example.com\nsince: !!timestamp 2020-13-45\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        load_lead_file(lead)
    assert str(caught.value).startswith(f"cannot read lead file {lead}:2: the value '2020-13-45' cannot be read as "
                                        "timestamp")


SAMPLES = {
    "campaign": "id: c\nname: C  # a comment\nentry: {stage: mql, tags: [a, 'b']}\nsteps:\n  - id: s1\n    wait: 2d\n"
                "  - id: s2\n    email: {template: t.html.j2, subject: \"Hi {{ lead.first_name }}\"}\n",
    "scalars": "a: 1\nb: 1.5\nc: true\nd: null\ne: 2026-03-01\nf: 2026-03-01T10:00:00Z\ng: 0x1f\nh: '007'\ni: ~\n"
               "j: .inf\nk: 1_000\nl: yes\n",
    "block-text": "text: |\n  line one\n  line two\n\nfolded: >-\n  a\n  b\n\n  c\nplain: a\n  b\n",
    "anchors-and-merges": "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\nlist: [*b, *b]\nmerged: {<<: [*b, {z: 4}]}\n",
    "odd-keys": "1: one\n? [a, b]\n: list key\ntrue: t\n",
    "duplicate-key": "a: 1\na: 2\n",
    "syntax-error": "a: [1, 2\nb: 3\n",
    "two-documents": "a: 1\n---\nb: 2\n",
    "tab-indent": "a:\n\tb: 1\n",
    "bad-value": "n: !!int abc\n",
    "undefined-alias": "a: *nowhere\n",
    "recursive": "a: &a [1, *a]\n",
    "alias-bomb": alias_bomb(),
    "merge-bomb": merge_bomb(),
    "too-deep": "a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n",
    "at-the-depth-limit": "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n",
    "too-many-aliases": "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n",
    "empty": "",
    "comment-only": "# nothing\n",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_libyaml_and_the_python_parser_read_every_file_alike(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are composed by libyaml when PyYAML has it (start-up reads every definition file), and a file with
    anything to report is read again by the Python parser: data, lines and problems are the same either way."""
    from nurture.definitions import yamlsource

    if yamlsource._CSafeLoader is None:
        pytest.skip("PyYAML without libyaml")
    fast = parse_yaml(SAMPLES[name], "f.yaml")
    monkeypatch.setattr(yamlsource, "_CSafeLoader", None)
    slow = parse_yaml(SAMPLES[name], "f.yaml")
    assert (fast.data, fast.lines, fast.problems, fast.text) == (slow.data, slow.lines, slow.problems, slow.text)


def test_a_clean_file_is_composed_by_libyaml() -> None:
    from nurture.definitions import yamlsource

    if yamlsource._CSafeLoader is None:
        pytest.skip("PyYAML without libyaml")
    assert yamlsource._parsed_by_libyaml(SAMPLES["anchors-and-merges"], "f.yaml") is not None
    assert yamlsource._parsed_by_libyaml(SAMPLES["duplicate-key"], "f.yaml") is None  # the Python parser reports it
    assert yamlsource._parsed_by_libyaml(SAMPLES["alias-bomb"], "f.yaml") is None
