"""Dialect name -> implementation, looked up (like ``backends.registry``), imported lazily.

Adding a database is one module in this package and one line here (and its URL spellings).
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.catalog.dialect import Dialect

_REGISTRY: dict[str, str] = {
    "sqlite": "proxy.catalog.sqlite:SQLite",
    "postgresql": "proxy.catalog.postgresql:PostgreSQL",
    "mysql": "proxy.catalog.mysql:MySQL",
}
# URL schemes that name a dialect otherwise: ``databases``' and SQLAlchemy's "+driver" forms,
# for the drivers docproxy ships.
_ALIASES: dict[str, str] = {
    "sqlite+aiosqlite": "sqlite",
    "postgres": "postgresql",
    "postgresql+asyncpg": "postgresql",
    "mysql+aiomysql": "mysql",
}


def dialect_name(url: str) -> str | None:
    """``postgresql+asyncpg://...`` -> ``postgresql``; None for a scheme docproxy cannot read."""
    if "://" not in url:
        return None
    scheme = url.split("://", 1)[0].lower()
    name = _ALIASES.get(scheme, scheme)
    return name if name in _REGISTRY else None


@functools.cache  # one instance per dialect: they hold no state
def dialect(name: str) -> Dialect:
    """The dialect registered as ``name``; KeyError names an unknown one."""
    module_name, _, class_name = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def dialect_of(url: str) -> Dialect:
    """The dialect of a catalog URL the config accepted."""
    name = dialect_name(url)
    if name is None:
        raise KeyError(f"no SQL dialect for {url.split('://', 1)[0]!r}")
    return dialect(name)
