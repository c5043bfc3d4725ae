"""Sending a body from storage: bounded chunks, backpressure, and an honest end.

Backpressure comes from awaiting ``send``: uvicorn pauses us while the socket buffer is full,
so at most a couple of chunks per connection are ever in memory. A storage fault after the
headers went out must not look like a clean end of body, so it aborts the connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

import anyio
import anyio.lowlevel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.documents.errors import StoreFailed
from proxy.documents.stats import DownloadStats
from proxy.http import audit
from proxy.http.accesslog import log_download
from proxy.http.envelope import error_response
from proxy.http.errors import Action
from proxy.metrics import instruments

logger = logging.getLogger("docproxy")

# The ASGI extension (offered by docproxy's server protocol) that resets the connection.
ABORT_EXTENSION = "docproxy.abort"

# Bodies up to this size go out without a disconnect watcher (one storage read, one send).
SINGLE_MESSAGE_LIMIT = 64 * 1024


class DownloadAborted(Exception):
    """Raised out of the ASGI app so a server without the abort extension drops the
    connection mid-body."""


class DownloadResponse(Response):
    """``length`` bytes from ``chunks`` (the Content-Length given in ``headers``)."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        status_code: int,
        headers: Mapping[str, str],
        length: int,
        stats: DownloadStats,
        label: str,
        trail: dict[str, Any] | None = None,
        backend: str = "",
    ) -> None:
        self.chunks = chunks
        self.status_code = status_code
        self.background = None
        self.stats = stats
        self.label = label
        self.trail = trail  # the audit event's fields, when the audit trail is on
        self.backend = backend  # the metrics' label for the bytes sent
        self.length = length
        # Starlette's init_headers, less what a download never needs (lower-casing names that
        # are lower case already, adding a Content-Type or Content-Length it already has).
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metered = instruments.active()
        timed = self.trail is not None or metered is not None
        self._started = time.monotonic() if timed else 0.0
        if scope.get("method") == "HEAD":
            await send(
                {"type": "http.response.start", "status": self.status_code,
                 "headers": self.raw_headers}
            )  # fmt: skip
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self._audit("complete", 0)
            return
        # The first chunk is read before the headers go out: a store that fails at once
        # (open refused, I/O error) still gets the API's 500 instead of a cut 200.
        try:
            self._first = await anext(aiter(self.chunks), b"")
        except StoreFailed as exc:
            logger.error("download %s: storage failed before the first byte: %s", self.label, exc)
            await error_response(exc, Action.DOWNLOAD)(scope, receive, send)
            self._audit("failed by storage", 0)
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        self.stats.open_streams += 1
        if metered is not None:
            metered.streams.inc()
        self._sent = 0
        self._failure: StoreFailed | None = None
        outcome = "aborted by client"
        try:
            if self._is_single_message():
                # Nothing to stop early for a body this small: a disconnect watcher task and
                # its task group would cost more than sending it.
                outcome = self._outcome(await self._pump(send))
            else:
                async with anyio.create_task_group() as group:

                    async def watch_disconnect() -> None:
                        while (await receive())["type"] != "http.disconnect":
                            pass
                        group.cancel_scope.cancel()

                    group.start_soon(watch_disconnect)
                    outcome = self._outcome(await self._pump(send))
                    group.cancel_scope.cancel()
        finally:
            self.stats.open_streams -= 1
            self.stats.bytes_sent += self._sent
            if outcome == "complete":
                self.stats.completed += 1
            else:
                self.stats.aborted += 1
            if metered is not None:
                self._count(metered, outcome)
            if self.trail is None:
                log_download(self.label, outcome, self._sent)
            else:  # the audit event is the download's line
                self._audit(outcome, self._sent)
        if self._failure is not None:
            abort = scope.get("extensions", {}).get(ABORT_EXTENSION)
            if abort is None:
                raise DownloadAborted(f"storage failed mid-stream: {self._failure}")
            abort()

    def _count(self, metered: instruments.Instruments, outcome: str) -> None:
        metered.streams.inc(-1)
        duration = time.monotonic() - self._started
        metered.download_ended(self.backend, outcome, self._sent, duration)

    def _audit(self, outcome: str, sent: int) -> None:
        if self.trail is None:
            return
        fields = self.trail  # this response's own: completed in place
        fields["bytes_sent"] = sent
        fields["outcome"] = outcome
        fields["duration"] = round(time.monotonic() - self._started, 6)
        audit.record("download", f"download {self.label} {outcome}: {sent} bytes sent", fields)

    def _is_single_message(self) -> bool:
        return self.length <= SINGLE_MESSAGE_LIMIT

    def _outcome(self, complete: bool) -> str:
        if complete:
            return "complete"
        return "aborted by storage" if self._failure is not None else "aborted by client"

    async def _pump(self, send: Send) -> bool:
        """Send every chunk; False (with ``_failure`` set) when the store failed on the way.

        The chunk that completes the body goes out as the last message, with no empty message
        after it: one ASGI send less per download.
        """
        try:
            async with aclosing(self.chunks) as chunks:
                if self._first and await self._send_chunk(send, self._first):
                    return True
                self._first = b""
                async for chunk in chunks:
                    if await self._send_chunk(send, chunk):
                        return True
                    # Once the client is gone, uvicorn's send returns at once, and a store
                    # whose reads come from its socket buffer (aiobotocore) never blocks either:
                    # without this the disconnect watcher's cancel would wait for the whole body.
                    await anyio.lowlevel.checkpoint()
        except StoreFailed as exc:
            logger.error(
                "download %s: storage failed after %d bytes: %s", self.label, self._sent, exc
            )
            self._failure = exc
            return False
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True

    async def _send_chunk(self, send: Send, chunk: bytes) -> bool:
        """Send ``chunk``; True when it was the body's last."""
        last = self._sent + len(chunk) >= self.length
        await send({"type": "http.response.body", "body": chunk, "more_body": not last})
        self._sent += len(chunk)
        return last
