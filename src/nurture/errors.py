"""The exceptions nurture raises.

Every error the user can cause derives from :class:`NurtureError`; the CLI prints its message and exits 1,
the HTTP layer turns it into a 4xx JSON body. Tree::

    NurtureError
    ├── ConfigError            settings from the environment / .env are unusable
    ├── DefinitionError        a campaign, scoring or template file is wrong (carries path:line problems)
    ├── TemplateRenderError    an email template failed to render for a lead
    ├── SchemaOutOfDate        the database schema is behind the code (run `nurture db upgrade`)
    ├── LeadNotFound           no lead with that email
    └── InvalidInput           a value given on the command line or over HTTP is malformed
"""

from __future__ import annotations

from dataclasses import dataclass


class NurtureError(Exception):
    """Something went wrong in nurture."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(NurtureError):
    """The configuration is not usable."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong in a definition file, with the line of the offending key (1-based; 0 when unknown)."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class DefinitionError(NurtureError):
    """A campaign, scoring or template file has problems."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid definition")


class TemplateRenderError(NurtureError):
    """An email template could not be rendered."""


class SchemaOutOfDate(NurtureError):
    """The database schema is behind this version of nurture: run `nurture db upgrade`."""


class LeadNotFound(NurtureError):
    """No lead has that email address."""


class InvalidInput(NurtureError):
    """The input is not valid."""
