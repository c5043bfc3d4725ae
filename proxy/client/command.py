"""docproxy fetch: download one document with a progress bar, resuming a partial file;
with --zip, one ZIP archive of several documents.

A partial file is resumed with a Range request from its size on. While a download is
incomplete, the object's validator (ETag, else Last-Modified) is kept next to it in
FILE.docproxy-resume and sent as If-Range, so a document that changed meanwhile is downloaded
again from the start instead of being spliced onto old bytes. Without that file the 206's
Content-Range start is still checked against the partial file's size. The finished file's
length is always verified.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from proxy.client.options import (
    CLIENT_ID_ENV,
    CLIENT_SECRET_ENV,
    DEFAULT_URL,
    TOKEN_ENV,
    URL_ENV,
    FetchOptions,
    parse_rate,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``fetch`` subcommand of ``docproxy``."""
    parser = commands.add_parser(
        "fetch",
        help="download a document (progress bar, resumes a partial file)",
        description=__doc__,  # plain text: it is the command's --help
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("document_ids", metavar="DOCUMENT_ID", nargs="+")
    parser.add_argument(
        "--zip", action="store_true", help="one ZIP archive of all the DOCUMENT_IDs given"
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="file to write (default: the served file name)"
    )
    parser.add_argument(
        "--url", help=f"docproxy's base URL (default: ${URL_ENV}, else {DEFAULT_URL})"
    )
    credentials = parser.add_mutually_exclusive_group()
    credentials.add_argument("--token", help=f"access token (default: ${TOKEN_ENV})")
    credentials.add_argument("--client-id", help=f"get a token first (default: ${CLIENT_ID_ENV})")
    parser.add_argument("--client-secret", help=f"with --client-id (default: ${CLIENT_SECRET_ENV})")
    parser.add_argument(
        "--presigned", action="store_true", help="ask POST /download for a URL and fetch that"
    )
    parser.add_argument(
        "--limit-rate", type=parse_rate, metavar="RATE", help="at most RATE bytes/s, e.g. 4M"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Options from the command line, with the environment filling what it left out."""
    if len(args.document_ids) > 1 and not args.zip:
        sys.stderr.write("docproxy fetch: several documents need --zip (one archive of them)\n")
        return 2
    token = args.token
    client_id = args.client_id or (None if token else os.environ.get(CLIENT_ID_ENV))
    if not token and not client_id:
        token = os.environ.get(TOKEN_ENV)
    options = FetchOptions(
        document_id=args.document_ids[0],
        archive_ids=tuple(args.document_ids) if args.zip else (),
        output=args.output,
        url=args.url or os.environ.get(URL_ENV) or DEFAULT_URL,
        token=token or None,
        client_id=client_id or None,
        client_secret=args.client_secret or os.environ.get(CLIENT_SECRET_ENV) or None,
        presigned=args.presigned,
        quiet=args.quiet,
        limit_rate=args.limit_rate,
    )
    # httpx is imported only when a download runs: `docproxy serve` never needs it.
    from proxy.client.fetch import fetch

    return fetch(options)
