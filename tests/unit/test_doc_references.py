"""The README and docs name tests as proof of what nurture guarantees (the reliability section, the benchmarks):
every test file and test they name must exist, or the doc promises what nothing checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REFERENCE = re.compile(r"(tests/[\w/]+\.py)(?:::(\w+))?")


def references() -> list[tuple[str, str, str | None]]:
    return [
        (doc.name, match.group(1), match.group(2))
        for doc in DOCS
        for match in REFERENCE.finditer(doc.read_text(encoding="utf-8"))
    ]


def test_the_docs_name_tests() -> None:
    assert any(name == "README.md" for name, _path, _test in references())


@pytest.mark.parametrize(("doc", "path", "test"), references())
def test_every_test_a_doc_names_exists(doc: str, path: str, test: str | None) -> None:
    source = ROOT / path
    assert source.is_file(), f"{doc} names {path}, which does not exist"
    if test is not None:
        assert re.search(rf"^(?:async )?def {re.escape(test)}\(", source.read_text(encoding="utf-8"), re.MULTILINE), (
            f"{doc} names {path}::{test}, which is not a test there"
        )
