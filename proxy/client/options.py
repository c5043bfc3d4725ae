"""What one download is asked to do, and where its defaults come from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.common.sizes import parse_size

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "DOCPROXY_URL"
TOKEN_ENV = "DOCPROXY_TOKEN"
CLIENT_ID_ENV = "DOCPROXY_CLIENT_ID"
CLIENT_SECRET_ENV = "DOCPROXY_CLIENT_SECRET"


@dataclass(frozen=True, slots=True)
class FetchOptions:
    document_id: str
    output: Path | None = None
    url: str = DEFAULT_URL
    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    presigned: bool = False
    quiet: bool = False
    limit_rate: int | None = None  # bytes per second
    # With ids here, one archive of them all (POST /download/zip) instead of one document.
    archive_ids: tuple[str, ...] = ()


def parse_rate(value: str) -> int:
    """``4M``, ``512KiB``, ``1048576``: bytes per second (argparse type)."""
    rate = parse_size(value)
    if rate is None or rate <= 0:
        raise ValueError(f"not a byte rate: {value!r}")
    return rate
