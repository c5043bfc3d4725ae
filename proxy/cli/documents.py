"""``docproxy documents ...``: the embedded catalog's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from proxy.catalog.embedded import (
    add_file,
    add_url,
    list_documents,
    remove_document,
    show_document,
)
from proxy.cli.check_config import settings_from


def documents_add(args: argparse.Namespace) -> int:
    document_id = add_file(
        settings_from(args),
        Path(args.path),
        document_id=args.id,
        name=args.name,
        type_=args.type,
        group=args.group,
    )
    print(document_id)
    return 0


def documents_add_url(args: argparse.Namespace) -> int:
    print(add_url(settings_from(args), args.url, document_id=args.id, name=args.name))
    return 0


def documents_list(args: argparse.Namespace) -> int:
    rows = list_documents(settings_from(args))
    print("id\tname\ttype\tgroup\tsize\tfile_path\turl")
    for d in rows:
        cells = (d.id, d.name, d.type, d.group, d.size, d.file_path, d.url)
        print("\t".join("" if c is None else str(c) for c in cells))
    return 0


def documents_show(args: argparse.Namespace) -> int:
    for column, value in show_document(settings_from(args), args.id).items():
        print(f"{column}: {'' if value is None else value}")
    return 0


def documents_remove(args: argparse.Namespace) -> int:
    removal = remove_document(settings_from(args), args.id, keep_file=args.keep_file)
    if removal.deleted is not None:
        print(f"removed {args.id} and its file {removal.deleted}")
    elif args.keep_file and removal.file_path:
        print(f"removed {args.id}; its file is kept: {removal.file_path}")
    else:
        print(f"removed {args.id}")
    return 0
