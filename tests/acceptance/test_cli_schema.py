"""``nurture schema`` through the installed console script: its schemas, run by the ``jsonschema`` library, accept every
shipped file in campaigns/ and the files ``nurture init`` writes, as ``nurture check`` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

NURTURE = Path(sys.executable).with_name("nurture")
SHIPPED = Path(__file__).resolve().parents[2] / "campaigns"
NO_SCHEMA = {"scoring.yaml", "sales.yaml"}


def nurture(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("NURTURE_")}
    return subprocess.run([str(NURTURE), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    where = tmp_path_factory.mktemp("schema")
    found = {}
    for kind in ("campaign", "policy"):
        result = nurture(where, "schema", *([kind] if kind != "campaign" else []))
        assert result.returncode == 0, result.stderr
        found[kind] = json.loads(result.stdout)
        jsonschema.Draft202012Validator.check_schema(found[kind])
    return found


def errors(schema: dict[str, Any], path: Path) -> list[str]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [f"{path.name}: {list(e.absolute_path)}: {e.message}"
            for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]


def kind_of(path: Path) -> str:
    return "policy" if path.name == "policy.yaml" else "campaign"


def test_every_shipped_file_passes_its_schema_and_check(schemas: dict[str, dict[str, Any]]) -> None:
    files = sorted(p for p in SHIPPED.glob("*.yaml") if p.name not in NO_SCHEMA)
    assert {p.name for p in files} >= {"policy.yaml", "ebook-nurture.yaml", "content-stream.yaml",
                                       "recycled-no-budget.yaml", "webinar-attendees.yaml", "pricing-page-visitors.yaml"}
    assert [error for path in files for error in errors(schemas[kind_of(path)], path)] == []
    checked = nurture(SHIPPED.parent, "check", "-q")
    assert (checked.returncode, checked.stdout) == (0, "")


def test_the_init_scaffold_passes_its_schema_and_check(schemas: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    made = nurture(tmp_path, "init", "project")
    assert made.returncode == 0, made.stderr
    files = sorted(p for p in (tmp_path / "project" / "campaigns").glob("*.yaml") if p.name not in NO_SCHEMA)
    assert [p.name for p in files] == ["policy.yaml", "welcome.yaml"]
    assert [error for path in files for error in errors(schemas[kind_of(path)], path)] == []
    checked = nurture(tmp_path / "project", "check", "-q")
    assert (checked.returncode, checked.stdout) == (0, "")


def test_a_file_without_a_schema_is_refused_by_name(tmp_path: Path) -> None:
    result = nurture(tmp_path, "schema", "scoring")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "no schema for 'scoring': use one of campaign, policy\n"


def test_the_help_says_what_a_schema_leaves_to_check(tmp_path: Path) -> None:
    result = nurture(tmp_path, "schema", "--help")
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "scoring.yaml and sales.yaml have no schema: nurture check validates them." in text
    assert "unique step ids and goto targets, templates, timezone names" in text
