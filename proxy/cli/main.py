"""docproxy: serve the Download Document API, check its config, manage the embedded catalog
(documents), download a document (fetch)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy import fetch
from proxy.catalog import CatalogMismatch, CatalogUnavailable, check_live
from proxy.config import CONFIG_ENV, ConfigError, Settings, config_path, load_settings
from proxy.embedded import (
    EmbeddedError,
    add_file,
    add_url,
    list_documents,
    remove_document,
    show_document,
)
from proxy.malloc import tune_malloc
from proxy.sqlite_reader import sqlite_file

STARTUP_FAILURE = 3  # uvicorn's exit status when the application fails to start


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(config_path(args.config))


def _check_catalog(settings: Settings) -> str | None:
    """Check the mapping against the live database; a note on what was checked, or None.

    Raises CatalogMismatch (every problem by key) or CatalogUnavailable.
    """
    catalog = settings.catalog
    if catalog.embedded and not Path(sqlite_file(catalog.url)).is_file():
        return None  # docproxy creates its own file at start: nothing to check yet
    asyncio.run(check_live(catalog))
    return "catalog: mapping matches the live database"


class CannotListen(Exception):
    """The listening address cannot be bound (in use, not this machine's, not allowed)."""


def listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before uvicorn starts: a busy port is then refused before
    the application has started (and said "ready"), in one line that names the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        address = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        reason = exc.strerror or str(exc)
        raise CannotListen(f"cannot listen on {address}: {reason[:1].lower()}{reason[1:]}") from exc
    sock.set_inheritable(True)  # worker processes serve on it too
    return sock


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    path = config_path(args.config)
    settings = load_settings(path)  # refuse a bad config before uvicorn starts
    try:
        _check_catalog(settings)  # refuse a mapping the database contradicts, too
    except CatalogUnavailable as exc:
        # Not fatal: the service answers 500 until the database is back, then serves.
        print(f"docproxy: warning: catalog database unavailable at start: {exc}", file=sys.stderr)
    tune_malloc()  # before uvicorn starts threads or worker processes
    # Workers re-create the app from the environment, so the config path travels there.
    os.environ[CONFIG_ENV] = str(Path(path).resolve())
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    config = uvicorn.Config(
        "proxy.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=args.workers or settings.server.workers,
        log_level=settings.server.log_level,
        access_log=settings.server.access_log,
        proxy_headers=False,
        server_header=False,  # no "server: uvicorn" on every response (Date stays)
    )
    sock = listen_socket(host, port)
    # uvicorn says where it listens only when it binds the socket itself.
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
        f"[{host}]" if ":" in host else host,
        sock.getsockname()[1],
    )
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
            return 0
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it shut down on
        pass
    finally:
        sock.close()
    return 0 if server.started else STARTUP_FAILURE


def check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        note = _check_catalog(settings)
    except CatalogUnavailable as exc:
        print(f"docproxy: catalog.url: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    backends = ", ".join(f"{b.name} ({b.protocol})" for b in settings.storage.backends)
    print(f"{settings.source}: OK (backends: {backends}; default: {settings.storage.default})")
    if note:
        print(note)
    return 0


def documents_add(args: argparse.Namespace) -> int:
    document_id = add_file(
        _settings(args),
        Path(args.path),
        document_id=args.id,
        name=args.name,
        type_=args.type,
        group=args.group,
    )
    print(document_id)
    return 0


def documents_add_url(args: argparse.Namespace) -> int:
    print(add_url(_settings(args), args.url, document_id=args.id, name=args.name))
    return 0


def documents_list(args: argparse.Namespace) -> int:
    rows = list_documents(_settings(args))
    print("id\tname\ttype\tgroup\tsize\tfile_path\turl")
    for d in rows:
        cells = (d.id, d.name, d.type, d.group, d.size, d.file_path, d.url)
        print("\t".join("" if c is None else str(c) for c in cells))
    return 0


def documents_show(args: argparse.Namespace) -> int:
    for column, value in show_document(_settings(args), args.id).items():
        print(f"{column}: {'' if value is None else value}")
    return 0


def documents_remove(args: argparse.Namespace) -> int:
    removal = remove_document(_settings(args), args.id, keep_file=args.keep_file)
    if removal.deleted is not None:
        print(f"removed {args.id} and its file {removal.deleted}")
    elif args.keep_file and removal.file_path:
        print(f"removed {args.id}; its file is kept: {removal.file_path}")
    else:
        print(f"removed {args.id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    config_help = f"config file (default: ${CONFIG_ENV}, else ./config.yaml)"
    parser = argparse.ArgumentParser(prog="docproxy", description=__doc__)  # plain: --help
    parser.add_argument("--config", help=config_help)
    # Accepted after the command too; SUPPRESS keeps a subcommand from erasing a value given
    # before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", parents=[common], help="start the service")
    run.add_argument("--host", help="listen address (default: server.host)")
    run.add_argument("--port", type=int, help="listen port (default: server.port)")
    run.add_argument("--workers", type=int, help="worker processes (default: server.workers)")
    run.set_defaults(handler=serve)

    check = commands.add_parser("check-config", parents=[common], help="validate the config")
    check.set_defaults(handler=check_config)

    docs = commands.add_parser("documents", help="manage the embedded default catalog")
    doc_commands = docs.add_subparsers(dest="documents_command", required=True)
    add = doc_commands.add_parser("add", parents=[common], help="copy a file in and register it")
    add.add_argument("path")
    add.add_argument("--id", help="document id (default: a new UUID)")
    add.add_argument("--name", help="file name clients see (default: the file's name)")
    add.add_argument("--type", help="MIME type or kind, e.g. application/pdf or PDF")
    add.add_argument("--group", help="tenant group that may download it")
    add.set_defaults(handler=documents_add)
    add_link = doc_commands.add_parser(
        "add-url", parents=[common], help="register a URL-based document (no file)"
    )
    add_link.add_argument("url")
    add_link.add_argument("--id")
    add_link.add_argument("--name")
    add_link.set_defaults(handler=documents_add_url)
    listing = doc_commands.add_parser("list", parents=[common], help="list documents")
    listing.set_defaults(handler=documents_list)
    show = doc_commands.add_parser("show", parents=[common], help="print every field of a document")
    show.add_argument("id")
    show.set_defaults(handler=documents_show)
    remove = doc_commands.add_parser(
        "remove", parents=[common], help="delete a document and its file in the local store"
    )
    remove.add_argument("id")
    remove.add_argument(
        "--keep-file", action="store_true", help="delete the catalog row only, keep the file"
    )
    remove.set_defaults(handler=documents_remove)

    fetch.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print("docproxy: the config is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except CatalogMismatch as exc:
        print("docproxy: the catalog mapping does not match the database:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (EmbeddedError, CannotListen) as exc:
        print(f"docproxy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
