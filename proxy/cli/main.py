"""docproxy: serve the Download Document API, check its config, manage the embedded catalog
(documents), revoke tokens, clients and documents (revoke), download a document (fetch)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from proxy.catalog.embedded import EmbeddedError
from proxy.catalog.errors import CatalogMismatch
from proxy.cli import revoke
from proxy.cli.check_config import check_config
from proxy.cli.documents import (
    documents_add,
    documents_add_url,
    documents_list,
    documents_remove,
    documents_show,
)
from proxy.cli.serve import CannotListen, serve
from proxy.client import command as fetch_command
from proxy.config.loading import CONFIG_ENV
from proxy.config.settings import ConfigError


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

    revoke.add_parser(commands, common)
    fetch_command.add_parser(commands)
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
    except (EmbeddedError, CannotListen, revoke.RevokeError) as exc:
        print(f"docproxy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
