"""Which store holds the shared state: one line per implementation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from proxy.catalog.sqlite_reader import sqlite_file
from proxy.config.settings import Settings
from proxy.state.store import StateStore

STATE_FILE = "docproxy-state.db"


# Each store's module is imported when it is chosen: the Redis client (and the `cryptography`
# it pulls in) costs a sidecar on SQLite memory and start time for nothing.
def _redis(s: Settings) -> StateStore:
    from proxy.state.redis import RedisState

    return RedisState(s.state.redis_url or "", s.state.key_prefix)


def _sqlite(s: Settings) -> StateStore:
    from proxy.state.sqlite import SQLiteState

    return SQLiteState(state_file(s))


STORES: dict[str, Callable[[Settings], StateStore]] = {"redis": _redis, "sqlite": _sqlite}


def state_store(settings: Settings) -> StateStore:
    return STORES["redis" if settings.state.redis_url else "sqlite"](settings)


def state_file(settings: Settings) -> str:
    """``state.path``, else beside the embedded catalog, else beside the config file.

    Never beside an operator's own SQLite catalog: docproxy only reads the operator's folders.
    """
    if settings.state.path:
        return settings.state.path
    if settings.catalog.embedded:
        return str(Path(sqlite_file(settings.catalog.url)).with_name(STATE_FILE))
    source = Path(settings.source)
    return str((source.parent if source.is_file() else Path.cwd()) / STATE_FILE)
