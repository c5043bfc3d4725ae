"""``docproxy check-config``: the config, and the catalog mapping against the live database."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from proxy.catalog.errors import CatalogUnavailable
from proxy.catalog.lookup import check_live
from proxy.catalog.sqlite_reader import sqlite_file
from proxy.config.loading import config_path, load_settings
from proxy.config.published import published_keys, published_warning
from proxy.config.settings import Settings


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(config_path(args.config))


def check_catalog(settings: Settings) -> str | None:
    """Check the mapping against the live database; a note on what was checked, or None.

    Raises CatalogMismatch (every problem by key) or CatalogUnavailable.
    """
    catalog = settings.catalog
    if catalog.embedded and not Path(sqlite_file(catalog.url)).is_file():
        return None  # docproxy creates its own file at start: nothing to check yet
    asyncio.run(check_live(catalog))
    return "catalog: mapping matches the live database"


def check_config(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        note = check_catalog(settings)
    except CatalogUnavailable as exc:
        print(f"docproxy: catalog.url: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    backends = ", ".join(f"{b.name} ({b.protocol})" for b in settings.storage.backends)
    print(f"{settings.source}: OK (backends: {backends}; default: {settings.storage.default})")
    if note:
        print(note)
    if published := published_keys(settings):
        print(f"docproxy: warning: {published_warning(published)}", file=sys.stderr)
    return 0
