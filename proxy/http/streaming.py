"""Sending a body from storage: bounded chunks, backpressure, and an honest end.

Backpressure comes from awaiting ``send``: uvicorn pauses us while the socket buffer is full,
so at most a couple of chunks per connection are ever in memory. A storage fault after the
headers went out must not look like a clean end of body, so it aborts the connection.

A local file on a plain TCP connection goes out with ``sendfile(2)`` instead (the server's
``docproxy.sendfile`` extension): from the page cache to the socket, never through Python,
except its last bytes (see ``sendfile_tail``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from proxy.documents.errors import StoreFailed
from proxy.documents.service import OpenFile
from proxy.documents.stats import DownloadStats
from proxy.http import audit
from proxy.http.accesslog import log_download
from proxy.http.envelope import error_response
from proxy.http.errors import Action
from proxy.metrics import instruments

logger = logging.getLogger("docproxy")

# The ASGI extension (offered by docproxy's server protocol) that resets the connection.
ABORT_EXTENSION = "docproxy.abort"

# The ASGI extension (offered by docproxy's server protocol on plain TCP connections) that
# sends bytes of a file with sendfile(2): ``await sendfile(fd, offset, count)`` makes one
# sendfile call and returns the bytes it sent, or 0 after waiting for a full socket to take
# bytes again (so the file is checked before the next ones leave). It raises
# ``BlockingIOError`` while the response head is still buffered (nothing sent: the body goes
# the usual way), ``ConnectionError`` when the connection is cut (client gone, send timeout,
# shutdown) and ``EOFError`` when the file ends early (the connection is reset). Not the ASGI
# "zero copy send" message: its send returns nothing (the bytes sent are needed for the stats
# and the log), and it sends a whole span with no point between waits to check the pin.
SENDFILE_EXTENSION = "docproxy.sendfile"

# Bodies up to this size go out without a disconnect watcher (one storage read, one send).
SINGLE_MESSAGE_LIMIT = 64 * 1024

SendFile = Callable[[int, int, int], Awaitable[int]]

# When /proc/sys/net cannot be read: more than any default Linux socket buffers hold.
UNKNOWN_IN_FLIGHT = 64 * 1024 * 1024
# What uvicorn's transport may hold beyond the socket before a send waits (its high-water mark).
TRANSPORT_BUFFER = 64 * 1024
# The reads of a sendfile'd body's tail: small, so a slow reader's stream holds little memory.
TAIL_CHUNK = 256 * 1024


def kernel_in_flight(net: Path = Path("/proc/sys/net")) -> int:
    """The most bytes the kernel can hold between docproxy's send and the reading program on
    this host: the largest TCP send buffer plus the largest receive buffer (a loopback reader's
    queue holds sendfile's page-cache pages themselves, not copies of them)."""
    try:
        send = max(_third(net / "ipv4/tcp_wmem"), 2 * _number(net / "core/wmem_max"))
        receive = max(_third(net / "ipv4/tcp_rmem"), 2 * _number(net / "core/rmem_max"))
    except (OSError, ValueError, IndexError):
        return UNKNOWN_IN_FLIGHT
    return send + receive


def _third(path: Path) -> int:
    return int(path.read_text().split()[2])


def _number(path: Path) -> int:
    return int(path.read_text().split()[0])


def sendfile_tail(in_flight: int) -> int:
    """How many last bytes of a body go through Python, read and checked, rather than by
    sendfile. The kernel sends a page as the page cache holds it when the reader takes it, so
    a file rewritten in place changes the sendfile'd bytes still in flight. Once this many
    bytes follow them, the last check of the file (after the last read, before its bytes go
    out) comes after every sendfile'd byte has reached the reader: a changed file is caught
    and the body cut, never completed with new bytes in it."""
    return in_flight + 2 * TAIL_CHUNK + TRANSPORT_BUFFER


class FileSource(Protocol):
    """A body that may also be had as an open local file (a document's ``CountedRead``)."""

    async def open_file(self) -> OpenFile | None: ...


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
        files: FileSource | None = None,
        in_flight: int = UNKNOWN_IN_FLIGHT,
    ) -> None:
        self.chunks = chunks
        self.files = files  # offers the body as a local file, for sendfile
        self.in_flight = in_flight  # kernel_in_flight(), or download.sendfile_in_flight's setting
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
        sendfile: SendFile | None = None
        if self.files is not None and self.length > sendfile_tail(self.in_flight):
            # (A shorter body would be all tail: the usual reads are just that.)
            sendfile = scope.get("extensions", {}).get(SENDFILE_EXTENSION)
        opened = await self._open_file() if sendfile is not None else None
        if opened is None:
            # The first chunk is read before the headers go out: a store that fails at once
            # (open refused, I/O error) still gets the API's 500 instead of a cut 200.
            try:
                self._first = await anext(aiter(self.chunks), b"")
            except StoreFailed as exc:
                logger.error(
                    "download %s: storage failed before the first byte: %s", self.label, exc
                )
                await error_response(exc, Action.DOWNLOAD)(scope, receive, send)
                self._audit("failed by storage", 0)
                return
        else:
            self._first = b""
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
            complete = None
            if opened is not None and sendfile is not None:
                try:
                    complete = await self._send_file(opened, sendfile)
                    if complete:  # the tail, read and checked
                        self.chunks = opened.chunks(opened.start + self._sent, TAIL_CHUNK)
                        complete = await self._stream(receive, send)
                finally:
                    opened.close()
            if complete is None:  # today's path: no file, or the server could not start
                complete = await self._stream(receive, send)
            outcome = self._outcome(complete)
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

    async def _open_file(self) -> OpenFile | None:
        """The body as an open local file, or None to read it the usual way (a store without
        files, or any fault: the usual path then answers it as it always has)."""
        assert self.files is not None
        try:
            return await self.files.open_file()
        except StoreFailed:
            return None

    async def _stream(self, receive: Receive, send: Send) -> bool:
        """Send the body read chunk by chunk, stopping early when the client goes away."""
        if self._is_single_message():
            # Nothing to stop early for a body this small: a disconnect watcher task and
            # its task group would cost more than sending it.
            return await self._pump(send)
        complete = False
        async with anyio.create_task_group() as group:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch_disconnect)
            complete = await self._pump(send)
            group.cancel_scope.cancel()
        return complete

    async def _send_file(self, opened: OpenFile, sendfile: SendFile) -> bool | None:
        """Send the body but its tail (``sendfile_tail``) with sendfile: True when the tail
        is left to send, False when cut (``_failure`` set when by the store), None when the
        server could not start (nothing sent).

        The file is checked after each piece, so a rewrite is caught at the next one. No
        disconnect watcher is needed: the server's sendfile raises ``ConnectionError`` once
        the client is gone.
        """
        position = opened.start
        last = opened.end - sendfile_tail(self.in_flight)
        try:
            while position < last:
                try:
                    sent = await sendfile(opened.fd, position, last - position)
                except BlockingIOError:
                    if position == opened.start:
                        return None
                    raise
                except ConnectionError:
                    return False
                except EOFError as exc:
                    opened.check()  # says how it ended early
                    ended = f"the file ended {opened.end - position} bytes early"
                    raise StoreFailed(ended) from exc
                except OSError as exc:  # reading the file failed
                    raise StoreFailed(f"sendfile: {exc}") from exc
                if position == opened.start and sent:
                    self.stats.zero_copy += 1
                position += sent
                self._sent += sent
                opened.count_sent(sent)
                opened.check()
        except StoreFailed as exc:
            self._store_failed(exc)
            return False
        return True

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
            self._store_failed(exc)
            return False
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True

    def _store_failed(self, exc: StoreFailed) -> None:
        """The store failed after the headers: logged once, and the connection will be cut."""
        logger.error("download %s: storage failed after %d bytes: %s", self.label, self._sent, exc)
        self._failure = exc

    async def _send_chunk(self, send: Send, chunk: bytes) -> bool:
        """Send ``chunk``; True when it was the body's last."""
        last = self._sent + len(chunk) >= self.length
        await send({"type": "http.response.body", "body": chunk, "more_body": not last})
        self._sent += len(chunk)
        return last
