"""The download behind ``docproxy fetch``: a token, the request, resuming, the progress bar.

The command's help (``proxy.client.command``) says what it does for the user.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import quote, unquote

import httpx

from proxy.client.options import (
    CLIENT_ID_ENV,
    CLIENT_SECRET_ENV,
    TOKEN_ENV,
    FetchOptions,
)
from proxy.client.progress import Progress, human_bytes
from proxy.common.filenames import clean_filename

RESUME_SUFFIX = ".docproxy-resume"
CHUNK_SIZE = 1024 * 1024

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.ASCII)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.ASCII)
_FILENAME_STAR = re.compile(r"filename\*\s*=\s*([^']*)'[^']*'([^;\s]+)", re.IGNORECASE)
_FILENAME = re.compile(r'filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))', re.IGNORECASE)


class FetchError(Exception):
    """A download that cannot go on; the message is what the user sees."""


@dataclass(frozen=True, slots=True)
class ResumeState:
    """The validator of the object a partial file holds the first bytes of."""

    validator: str

    @staticmethod
    def path_for(target: Path) -> Path:
        return target.with_name(target.name + RESUME_SUFFIX)

    @classmethod
    def load(cls, target: Path) -> ResumeState | None:
        try:
            data = json.loads(cls.path_for(target).read_text())
            validator = data["validator"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(validator) if isinstance(validator, str) and validator else None

    @classmethod
    def from_response(cls, response: httpx.Response) -> ResumeState | None:
        etag = response.headers.get("etag")
        if etag and not etag.startswith("W/"):  # If-Range takes strong validators only
            return cls(etag)
        modified = response.headers.get("last-modified")
        return cls(modified) if modified else None

    def save(self, target: Path) -> None:
        self.path_for(target).write_text(json.dumps({"validator": self.validator}))

    @classmethod
    def forget(cls, target: Path) -> None:
        cls.path_for(target).unlink(missing_ok=True)


def server_message(response: httpx.Response) -> str:
    """The API's ``message`` of an error envelope, else the HTTP reason."""
    try:
        response.read()
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return f"{body['message']} (HTTP {response.status_code})"
    except (ValueError, httpx.HTTPError):
        pass
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()


def filename_from(content_disposition: str | None, fallback: str) -> str:
    """The name to save as: ``filename*`` (RFC 8187), else ``filename``, made safe."""
    if content_disposition:
        star = _FILENAME_STAR.search(content_disposition)
        if star and star.group(1).strip().lower() in ("utf-8", ""):
            return clean_filename(unquote(star.group(2), errors="replace"))
        plain = _FILENAME.search(content_disposition)
        if plain:
            quoted, bare = plain.group(1), plain.group(2)
            name = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            return clean_filename(name)
    return clean_filename(fallback)


class Fetcher:
    def __init__(self, options: FetchOptions, client: httpx.Client, stderr: TextIO) -> None:
        self.options = options
        self.client = client
        self.stderr = stderr
        self.base_url = options.url.rstrip("/")

    def token(self) -> str:
        if self.options.token:
            return self.options.token
        if not (self.options.client_id and self.options.client_secret):
            raise FetchError(
                "no credentials: give --token, or --client-id and --client-secret "
                f"(or ${TOKEN_ENV}, ${CLIENT_ID_ENV} and ${CLIENT_SECRET_ENV})"
            )
        response = self.client.post(
            f"{self.base_url}/generate-client-auth-token",
            json={
                "client_id": self.options.client_id,
                "client_secret": self.options.client_secret,
                "fingerprint": "docproxy-fetch",
            },
        )
        if response.status_code != 200:
            raise FetchError(f"token request refused: {server_message(response)}")
        return _data_field(response, "access_token")

    def source(self) -> tuple[str, dict[str, str]]:
        """The URL to download from and the headers it needs."""
        auth = {"authorization": f"Bearer {self.token()}"}
        if self.options.archive_ids:
            return self.archive_link(auth), {}
        if not self.options.presigned:
            return f"{self.base_url}/download/{quote(self.options.document_id, safe='')}", auth
        response = self.client.post(
            f"{self.base_url}/download",
            json={"document_id": self.options.document_id},
            headers=auth,
        )
        if response.status_code != 200:
            raise FetchError(server_message(response))
        # A store's presigned URL carries its own signature: another Authorization would be
        # refused by S3 ("only one auth mechanism allowed").
        return _data_field(response, "download_url"), {}

    def archive_link(self, auth: dict[str, str]) -> str:
        """The signed link to the archive of ``archive_ids``; the link needs no token."""
        body: dict[str, object] = {"document_ids": list(self.options.archive_ids)}
        if self.options.output is not None:
            body["filename"] = self.options.output.name
        response = self.client.post(f"{self.base_url}/download/zip", json=body, headers=auth)
        if response.status_code != 200:
            refused = _refused_document(response)
            raise FetchError(server_message(response) + refused)
        return _data_field(response, "download_url")

    def run(self) -> Path:
        url, headers = self.source()
        target = self.options.output
        for _ in range(3):
            offset, state = _partial(target)
            request_headers = dict(headers)
            if offset:
                request_headers["range"] = f"bytes={offset}-"
                if state is not None:
                    request_headers["if-range"] = state.validator
            with self.client.stream("GET", url, headers=request_headers) as response:
                if response.status_code == 416 and target is not None and offset:
                    total = _unsatisfied_total(response)
                    if total == offset:
                        ResumeState.forget(target)
                        self._say(f"{target}: already complete ({human_bytes(total)})")
                        return target
                    # The local file is longer than the object: it is not a prefix of it.
                    target.unlink()
                    ResumeState.forget(target)
                    continue
                if response.status_code not in (200, 206):
                    raise FetchError(server_message(response))
                if target is None:
                    target = Path(
                        filename_from(
                            response.headers.get("content-disposition"), self.fallback_name()
                        )
                    )
                    if _partial(target)[0]:
                        continue  # a partial file of that name: ask again for the rest only
                self._receive(response, target, offset)
                return target
        raise FetchError("the server kept refusing to resume; remove the partial file")

    def fallback_name(self) -> str:
        return "documents.zip" if self.options.archive_ids else self.options.document_id

    def _receive(self, response: httpx.Response, target: Path, offset: int) -> None:
        if response.status_code == 206:
            start, total = _content_range(response)  # checked: never splice at a wrong offset
            if start != offset:
                raise FetchError(f"the server resumed at byte {start}, not at {offset}")
            mode = "ab"
        else:
            offset, mode = 0, "wb"
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
        state = ResumeState.from_response(response)
        if state is not None:
            state.save(target)
        progress = Progress(self.stderr, target.name, total, offset, self.options.quiet)
        limit = self.options.limit_rate
        began = time.monotonic()
        received = 0
        try:
            with target.open(mode) as sink:
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    sink.write(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
                    if limit:
                        ahead = received / limit - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
        except httpx.HTTPError as exc:
            raise FetchError(
                f"download interrupted after {human_bytes(offset + received)}: {exc}; "
                "run the same command again to resume"
            ) from exc
        size = target.stat().st_size
        if total is not None and size != total:
            raise FetchError(
                f"{target}: {size} bytes instead of {total}; run the same command again to resume"
            )
        ResumeState.forget(target)
        resumed = f", resumed at byte {offset}" if offset else ""
        elapsed = max(time.monotonic() - progress.started, 1e-9)
        progress.finish(
            f"saved {target} ({size} bytes{resumed}) in {elapsed:.1f}s, "
            f"{human_bytes(received / elapsed)}/s"
        )

    def _say(self, message: str) -> None:
        if not self.options.quiet:
            self.stderr.write(message + "\n")


def _partial(target: Path | None) -> tuple[int, ResumeState | None]:
    """Bytes already in ``target`` (0 when absent or empty) and its saved validator."""
    if target is None:
        return 0, None
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        return 0, None
    return size, ResumeState.load(target) if size else None


def _content_range(response: httpx.Response) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
    if match is None:
        raise FetchError(
            f"206 without a usable Content-Range: {response.headers.get('content-range')!r}"
        )
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _unsatisfied_total(response: httpx.Response) -> int | None:
    match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("content-range", "").strip())
    return int(match.group(1)) if match else None


def _refused_document(response: httpx.Response) -> str:
    """``: document ID`` when an archive's refusal names the document at fault."""
    try:
        document_id = response.json()["data"]["document_id"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f": document {document_id}" if isinstance(document_id, str) else ""


def _data_field(response: httpx.Response, name: str) -> str:
    try:
        value = response.json()["data"][name]
    except (ValueError, KeyError, TypeError) as exc:
        raise FetchError(f"unexpected answer from {response.url}: no data.{name}") from exc
    if not isinstance(value, str):
        raise FetchError(f"unexpected answer from {response.url}: data.{name} is not a string")
    return value


def check_base_url(url: str) -> None:
    """Refuse a base URL httpx could not send to, before any request is made."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise FetchError(f"base URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FetchError(f"base URL {url!r}: not an http:// or https:// URL")


def unreachable(exc: httpx.RequestError) -> str:
    """``cannot reach URL: reason``. The URL loses its query: a presigned one holds a signature."""
    try:
        url = str(exc.request.url.copy_with(query=None))
    except RuntimeError:  # an error raised before any request was made
        url = "the server"
    cause: BaseException | None = exc
    while cause is not None and not (isinstance(cause, OSError) and cause.strerror):
        cause = cause.__cause__ or cause.__context__
    reason = cause.strerror if isinstance(cause, OSError) else str(exc) or type(exc).__name__
    return f"cannot reach {url}: {reason[:1].lower()}{reason[1:]}"


def fetch(options: FetchOptions, stderr: TextIO | None = None) -> int:
    """Run one download; 0 on success, 1 with the reason on stderr otherwise."""
    stderr = stderr or sys.stderr
    timeout = httpx.Timeout(30.0, read=120.0)
    try:
        check_base_url(options.url)
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            Fetcher(options, client, stderr).run()
    except FetchError as exc:
        stderr.write(f"docproxy fetch: {exc}\n")
        return 1
    except httpx.RequestError as exc:
        stderr.write(f"docproxy fetch: {unreachable(exc)}\n")
        return 1
    except httpx.HTTPError as exc:
        stderr.write(f"docproxy fetch: {exc.__class__.__name__}: {exc}\n")
        return 1
    except OSError as exc:
        stderr.write(f"docproxy fetch: {exc}\n")
        return 1
    return 0
