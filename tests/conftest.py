"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtp_sink import SmtpSink  # tests/ is on sys.path (rootdir conftest, no __init__.py)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real aiosmtpd server on 127.0.0.1 and a free port, collecting what it receives."""
    with SmtpSink() as sink:
        yield sink
