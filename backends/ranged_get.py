"""One ranged HTTP GET whose body is received straight into chunk buffers.

An SDK's body stream (aiobotocore over aiohttp) hands out bytes the event loop copied out of
its socket buffer, joined again into chunks: two copies of every byte in Python, most of
docproxy's CPU time when it relays a big object. Here an :class:`asyncio.BufferedProtocol` lets
the loop ``recv_into`` the chunk that will be sent: no copy at all.

The request is a presigned URL (the caller signs it), so this module knows HTTP/1.1 and
nothing of any store. It takes only the simple, expected answer: ``200``/``206`` with a
``Content-Length`` of exactly the range. Anything else before the first body byte raises
:class:`Unexpected`, and the caller asks its SDK instead, which knows the store's errors,
redirects and retries. A failure after the body began is a :class:`StorageError`, and so is
a store that does not answer in time (the SDK would only wait as long again).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from backends.base import StorageError

HEADER_LIMIT = 64 * 1024
SCRATCH_SIZE = 256  # what the socket is read into once the range is complete


class Unexpected(Exception):
    """The store's answer is not a plain body of the range: let the SDK handle this one."""


class _RangeReceiver(asyncio.BufferedProtocol):
    """Receives the head into a small buffer, then the body into chunks of ``chunk_size``.

    Reading pauses when a chunk is complete and the consumer is busy sending the previous one,
    and resumes when the consumer has taken every complete chunk: a stream holds the chunk
    being sent and one more (complete or being filled), whatever the client's speed.
    """

    def __init__(self, length: int, chunk_size: int) -> None:
        loop = asyncio.get_running_loop()
        self.head_received: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.headers: dict[str, str] = {}
        self._head: bytearray | None = bytearray(HEADER_LIMIT)
        self._scratch = bytearray(SCRATCH_SIZE)
        self._head_size = 0
        self._chunk_size = chunk_size
        self._remaining = length  # body bytes not yet in a full chunk
        self._chunk: bytearray | None = None
        self._filled = 0
        self._ready: deque[bytearray] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._transport: asyncio.Transport | None = None
        self._paused = False

    # -- the event loop's side -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._head is not None:
            return memoryview(self._head)[self._head_size :]
        if not self._remaining or self._error is not None:
            # The range is complete (or given up on) while its last chunks wait for a slow or
            # departed client, and the socket became readable: usually the store's close,
            # which the loop reads into a buffer too. An empty buffer here would be logged by
            # asyncio as a fatal transport error; a scratch one takes the EOF (or an excess,
            # refused in buffer_updated).
            return memoryview(self._scratch)
        if self._chunk is None:  # allocated only when the socket has something for it
            self._chunk = bytearray(min(self._chunk_size, self._remaining))
            self._filled = 0
        return memoryview(self._chunk)[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._head is not None:
            self._head_size += nbytes
            self._parse_head()
            return
        if not self._remaining or self._error is not None:  # into the scratch buffer
            if nbytes and self._error is None:
                self._fail(StorageError("store sent more than the range"))
            return
        self._filled += nbytes
        self._chunk_done()

    def eof_received(self) -> bool:
        self._end(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)

    # -- the consumer's side -------------------------------------------------------------------

    async def next_chunk(self, timeout: float) -> bytearray | None:
        """The next full chunk; None after the last one."""
        while not self._ready:
            if self._error is not None:
                raise self._error
            if self._remaining == 0:
                return None
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._wakeup, timeout)
            except TimeoutError:
                raise StorageError(f"no data from the store for {timeout:g}s") from None
        chunk = self._ready.popleft()
        if self._paused and not self._ready:
            self._paused = False
            assert self._transport is not None
            self._transport.resume_reading()
        return chunk

    # -- helpers -------------------------------------------------------------------------------

    def _parse_head(self) -> None:
        assert self._head is not None
        end = self._head.find(b"\r\n\r\n", 0, self._head_size)
        if end < 0:
            if self._head_size == len(self._head):
                self._fail(Unexpected("response head over 64 KiB"))
            return
        status_line, *lines = bytes(self._head[:end]).decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            self._fail(Unexpected(f"not an HTTP/1.x status line: {status_line[:80]!r}"))
            return
        self.status = int(parts[1])
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        body_start = bytes(self._head[end + 4 : self._head_size])
        self._head = None
        if not self.head_received.done():
            self.head_received.set_result(None)
        if self.status not in (200, 206):
            return  # the consumer gives up on this answer; its body is no part of the range
        # Body bytes that came with the head (up to 64 KiB): copied into chunks, once.
        view = memoryview(body_start)
        while view and self._remaining and self._error is None:
            space = self.get_buffer(len(view))
            taken = min(len(space), len(view))
            space[:taken] = view[:taken]
            space.release()
            view = view[taken:]
            self.buffer_updated(taken)
        if view and self._error is None:
            self._fail(StorageError("store sent more than the range"))

    def _chunk_done(self) -> None:
        if self._chunk is None or self._filled < len(self._chunk):
            return
        self._ready.append(self._chunk)
        self._remaining -= len(self._chunk)
        self._chunk = None
        consumer_waiting = self._wakeup is not None and not self._wakeup.done()
        if self._remaining and not self._paused and not consumer_waiting:
            # A chunk waits and the consumer is busy sending one: receive no third.
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused = True
        self._wake()

    def _end(self, exc: BaseException | None) -> None:
        if self._head is not None:
            self._fail(Unexpected(f"connection closed before the response head: {exc}"))
        elif self._remaining:
            reason = f": {exc}" if exc else ""
            self._fail(StorageError(f"store closed with {self._remaining} bytes to go{reason}"))

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        if not self.head_received.done():
            self.head_received.set_exception(exc)
        self._wake()
        if self._transport is not None:
            self._transport.close()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


def _content_length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def ranged_get(
    url: str,
    start: int,
    end: int,
    *,
    chunk_size: int,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[bytearray]:
    """Bytes ``[start, end)`` of ``url`` in chunks of ``chunk_size`` (the last may be shorter).

    Raises :class:`Unexpected` before the first chunk when the answer is not a plain body of
    the range, or no connection could be made; :class:`StorageError` for a failure after
    that, or a timeout (``timeout`` seconds for the connection and head, and for each wait
    for data).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unexpected(f"not an http(s) URL: {parts.scheme}://...")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    context = (ssl_context or ssl.create_default_context()) if secure else None
    receiver = _RangeReceiver(end - start, chunk_size)
    loop = asyncio.get_running_loop()
    transport: asyncio.BaseTransport | None = None
    try:
        try:
            async with asyncio.timeout(timeout):
                transport, _ = await loop.create_connection(
                    lambda: receiver, parts.hostname, port, ssl=context
                )
                target = parts.path or "/"
                if parts.query:
                    target += "?" + parts.query
                extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
                request = (
                    f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                    f"Range: bytes={start}-{end - 1}\r\nAccept-Encoding: identity\r\n"
                    f"{extra}Connection: close\r\n\r\n"
                )
                transport.write(request.encode("ascii"))  # type: ignore[attr-defined]
                await receiver.head_received
        except TimeoutError:
            # Final: the SDK would wait as long again for the same silent store.
            raise StorageError(f"the store did not answer within {timeout:g}s") from None
        except OSError as exc:
            raise Unexpected(f"cannot reach the store: {exc}") from exc
        if receiver.status not in (200, 206):
            raise Unexpected(f"HTTP {receiver.status}")
        if receiver.status == 200 and start != 0:
            raise Unexpected("the store ignored the Range header")
        if "transfer-encoding" in receiver.headers:
            raise Unexpected(f"Transfer-Encoding: {receiver.headers['transfer-encoding']}")
        if _content_length(receiver.headers) != end - start:
            raise Unexpected(f"Content-Length {receiver.headers.get('content-length')!r}")
        while (chunk := await receiver.next_chunk(timeout)) is not None:
            yield chunk
    finally:
        if transport is not None:
            transport.close()
