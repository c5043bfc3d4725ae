"""The catalog's failures: the database failed, cannot be reached, or does not fit the mapping."""

from __future__ import annotations


class CatalogError(Exception):
    """The database failed or refused the query."""


class CatalogUnavailable(CatalogError):
    """The database cannot be reached (down, refusing connections, or timing out)."""


class CatalogMismatch(CatalogError):
    """The live database does not fit the mapping; ``problems`` name each config key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def describe(exc: BaseException) -> str:
    """``Type: message`` of a driver's error, for the log and for a refusal."""
    text = str(exc).strip() or "no detail"
    return f"{type(exc).__name__}: {text}"
