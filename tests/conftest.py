"""Shared pytest fixtures, and the layer markers each test gets from its folder (``-m unit``, ``-m "not acceptance"``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from smtp_sink import SmtpSink  # tests/support is on sys.path (``pythonpath`` in pyproject.toml)

LAYERS = ("unit", "integration", "acceptance")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its layer, read from the folder it lives in, so the folders are the only place to say it."""
    for item in items:
        try:
            layer = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if layer in LAYERS:
            item.add_marker(layer)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real aiosmtpd server on 127.0.0.1 and a free port, collecting what it receives."""
    with SmtpSink() as sink:
        yield sink
