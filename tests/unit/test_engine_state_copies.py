"""The engine copies an enrollment state field by field when it records a step or moves on (faster than
dataclasses.replace): a field added to the state must be added there too, or it would be lost on the way."""

from __future__ import annotations

from dataclasses import fields

from nurture.core.engine import EnrollmentState


def test_the_state_has_the_fields_the_engine_copies() -> None:
    assert [f.name for f in fields(EnrollmentState)] == ["step_id", "arrived_at", "enrolled_at", "path", "held_out"]

