"""uvicorn's httptools protocol with docproxy's edge: what one connection may cost the server.

The request head is bounded as it arrives (``server.max_header_bytes``, ``max_header_fields``,
``max_target_bytes``) and answered 431/414/400 in the API's envelope before any endpoint runs;
``Host`` is checked here too. Timers close a connection whose head or body stalls, and abort a
download whose reader makes no progress for ``download.send_timeout``; a slower reader keeps
its stream under backpressure. On shutdown, running responses get ``server.shutdown_timeout``
to finish, then their connections are reset, never ended as if complete; an idle keep-alive
connection is left for its client to close, and a request still sent on it is answered with
``Connection: close``.

On a plain TCP connection the ``docproxy.sendfile`` extension sends a local file's bytes with
``sendfile(2)``; the same send timeout and shutdown reset apply to it.

Refusals are one INFO line each: a client's junk must never become an ERROR or a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import time
import weakref
from typing import Any, NoReturn

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from proxy.http.envelope import request_error_body
from proxy.http.errors import (
    BadHost,
    HeadTooLarge,
    MalformedRequest,
    RequestError,
    RequestTimeout,
    TargetTooLong,
    TooManyConnections,
    answer_for,
)
from proxy.http.streaming import ABORT_EXTENSION, SENDFILE_EXTENSION
from proxy.runtime.drain import begin_draining
from proxy.server.config import ServerLimits
from proxy.server.hosts import allowed, host_name

logger = logging.getLogger("docproxy")

# SO_LINGER on, 0 s: close() sends a reset, so a cut download can never look complete.
_RESET = struct.pack("ii", 1, 0)
# How long a refused connection's late bytes are read and dropped before it is closed.
_LINGER = 2.0
_LINGER_BYTES = 256 * 1024
# What sendfile(2) raises when the client is gone rather than the file unreadable.
_SOCKET_GONE = frozenset(
    (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ETIMEDOUT)
)
# A flood of refused connections logs one line per interval, with the count.
_REFUSAL_LOG_INTERVAL = 10.0


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the answer is in ``_rejection``."""


# A server sees the same few Host values over and over: each is checked once per process.
_HOST_VERDICTS: dict[tuple[bytes, tuple[str, ...]], BadHost | None] = {}
_HOST_VERDICTS_KEPT = 256


def _host_problem(value: bytes, allowed_hosts: tuple[str, ...]) -> BadHost | None:
    """Why the ``Host`` value is refused, or None."""
    key = (value, allowed_hosts)
    try:
        return _HOST_VERDICTS[key]
    except KeyError:
        pass
    name = host_name(value)
    if name is None:
        problem: BadHost | None = BadHost()
    elif allowed_hosts and not allowed(name, allowed_hosts):
        problem = BadHost("Host not allowed")
    else:
        problem = None
    if len(_HOST_VERDICTS) >= _HOST_VERDICTS_KEPT:
        _HOST_VERDICTS.clear()  # junk Host values must not grow it without bound
    _HOST_VERDICTS[key] = problem
    return problem


class _RefusalLog:
    """One INFO line per interval for connections refused because the worker is full."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0

    def note(self, limit: int) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= _REFUSAL_LOG_INTERVAL:
            logger.info(
                "refused %d connection(s): %d open (server.max_connections)", self.count, limit
            )
            self.count = 0
            self.last = now


_refusals = _RefusalLog()


class EdgeProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection; built by uvicorn through ``functools.partial`` with the limits."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ServerLimits,
        send_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.send_timeout = send_timeout
        self._reading_head = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._fields = 0
        self._heads = 0  # heads complete on this connection
        self._rejection: RequestError | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_left = 0
        self._send_resumed = False
        self._drain_timer: asyncio.TimerHandle | None = None
        self._draining = False  # the server is stopping: each response ends the connection
        self._answered = False  # a refusal went out: later bytes are dropped
        self._linger_timer: asyncio.TimerHandle | None = None
        self._dropped = 0
        # While a sendfile waits for a full socket: a duplicate of the socket's descriptor
        # (uvloop refuses a writer on the transport's own), and the wait's outcome.
        self._socket_fd = -1
        self._socket: Any = None
        self._corked = False  # TCP_CORK set for a sendfile span not yet all queued
        self._watched: int | None = None
        self._writable: asyncio.Future[str] | None = None

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            _refusals.note(self.limits.max_connections)
            self._answer(TooManyConnections())
            return
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_expired)
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            # Plain TCP only: through TLS the bytes must pass through the encryption.
            self._socket_fd = sock.fileno()
            self._socket = sock

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching("cut")
        timers = (self._head_timer, self._body_timer, self._send_timer, self._drain_timer)
        for timer in (*timers, self._linger_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            self._dropped += len(data)
            if self._dropped > _LINGER_BYTES:
                self.transport.close()  # a sender that will not stop: no more reading for it
            return
        self._unset_keepalive_if_required()
        if not self._reading_head:
            self._feed(data)
            return
        room = self.limits.max_header_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            fed = self._feed(data)
            if fed and self._reading_head and self._head_bytes and self._head_timer is None:
                # A head split over several reads: it must be complete in time.
                self._head_timer = self.loop.call_later(
                    self.limits.header_timeout, self._head_expired
                )
            return
        # More than the head may hold: feed what fits; the head must end within it.
        heads = self._heads
        self._head_bytes += room
        if room > 0 and not self._feed(data[:room]):
            return
        if self._heads == heads:
            self._refuse(HeadTooLarge())
            return
        self.data_received(data[room:])

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False when the connection is being closed (a refusal)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # docproxy upgrades nothing: the request was answered as a plain one
        except httptools.HttpParserError:
            self._refuse(self._rejection or MalformedRequest())
            return False
        return not self._finished()

    def _unsupported_upgrade_warning(self) -> None:
        """An ``Upgrade`` header is a client's choice, not a server fault: no warning."""

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._fields = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_target_bytes:
            self._rejection = TargetTooLong()
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.limits.max_header_fields:
            self._rejection = HeadTooLarge()
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._heads += 1
        self._reading_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        has_body = self._check_headers()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            self.scope["extensions"] = self._extensions_for(cycle)
            if self._draining:
                cycle.keep_alive = False  # answered, with Connection: close
        if has_body:
            self._body_seen = self.loop.time()
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_expired)

    def _extensions_for(self, cycle: RequestResponseCycle) -> dict[str, Any]:
        """What this request's app may call, bound to its own cycle (a pipelined request has
        its cycle made while the one before is still answering). A response cut by a store
        fault resets the connection itself instead of raising out of the app (a traceback)."""
        # The cycle holds its scope, which holds these: a strong reference back to the cycle
        # would make every request garbage that only the cyclic collector frees, and its
        # full collections stall the loop (tens of milliseconds at the 99th percentile).
        ref = weakref.ref(cycle)

        def abort() -> None:
            found = ref()
            if found is not None:
                self._abort_response(found)

        extensions: dict[str, Any] = {ABORT_EXTENSION: abort}
        if self._socket_fd >= 0:

            async def send_file(fd: int, offset: int, count: int) -> int:
                found = ref()
                if found is None:
                    raise ConnectionAbortedError("the response is gone")
                return await self._send_file(found, fd, offset, count)

            extensions[SENDFILE_EXTENSION] = send_file
        return extensions

    def _check_headers(self) -> bool:
        """Refuse a bad ``Host``; True when a body follows the head."""
        host: bytes | None = None
        hosts = 0
        has_body = False
        for name, value in self.headers:
            if name == b"host":
                host = value
                hosts += 1
            elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                has_body = True
        if hosts > 1:
            self._refuse_head(BadHost("Duplicate Host header"))
        if host is None:
            if self.parser.get_http_version() != "1.0":
                self._refuse_head(BadHost("Missing Host header"))
            return has_body
        problem = _host_problem(host, self.limits.allowed_hosts)
        if problem is not None:
            self._refuse_head(problem)
        return has_body

    def _refuse_head(self, rejection: RequestError) -> NoReturn:
        self._rejection = rejection
        raise _Refused

    def on_body(self, body: bytes) -> None:
        self._body_seen = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._reading_head = True
        self._head_bytes = 0
        super().on_message_complete()

    # Timers

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self._reading_head or self._finished():
            return
        if self._head_bytes == 0:
            self.transport.close()  # an idle connection: nothing to answer
        else:
            self._refuse(RequestTimeout())

    def _body_expired(self) -> None:
        self._body_timer = None
        if self._reading_head or self._finished():
            return
        if self.cycle.response_complete:
            self.transport.close()  # answered already; the rest of the body is not needed
            return
        waited = self.loop.time() - self._body_seen
        if self.flow.read_paused or waited < self.limits.body_timeout:
            # Paused by us (the endpoint is not reading yet), or bytes came meanwhile.
            delay = self.limits.body_timeout - (0 if self.flow.read_paused else waited)
            self._body_timer = self.loop.call_later(delay, self._body_expired)
            return
        self._refuse(RequestTimeout())

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_left = self.transport.get_write_buffer_size()
            self._send_resumed = False
            self._send_timer = self.loop.call_later(self.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._send_resumed = True

    def _send_stalled(self) -> None:
        """The reader had ``send_timeout`` seconds: any byte taken is progress (the buffer
        shrank, or emptied enough to resume us), none aborts."""
        self._send_timer = None
        if not self.flow.write_paused or self._finished():
            return
        left = self.transport.get_write_buffer_size()
        if self._send_resumed or left < self._send_left:
            self._send_left = left
            self._send_resumed = False
            self._send_timer = self.loop.call_later(self.send_timeout, self._send_stalled)
            return
        self._log_stalled()
        self.abort()

    def _log_stalled(self) -> None:
        logger.info(
            "aborted a response to %s: no progress for %gs (download.send_timeout)",
            self._peer(),
            self.send_timeout,
        )

    # Zero-copy sends

    async def _send_file(
        self, cycle: RequestResponseCycle, fd: int, offset: int, count: int
    ) -> int:
        """One ``sendfile(2)`` of up to ``count`` bytes of ``fd`` at ``offset``: the bytes
        sent, or 0 after waiting (at most ``send_timeout``) for a full socket to take more.
        Raises as ``proxy.http.streaming.SENDFILE_EXTENSION`` says; a cut connection is reset
        and its cycle counts as disconnected, as with ``_abort_response``."""
        self._ensure_open(cycle)
        if (
            not cycle.response_started
            or cycle.response_complete
            or cycle.chunked_encoding is not False
            or cycle.scope["method"] == "HEAD"
        ):
            raise RuntimeError("sendfile needs a started response with a Content-Length")
        if count > cycle.expected_content_length:
            raise RuntimeError("Response content longer than Content-Length")
        if self.transport.get_write_buffer_size():
            # uvloop writes the head at the end of this loop iteration: let it go first.
            await asyncio.sleep(0)
            self._ensure_open(cycle)
            if self.transport.get_write_buffer_size():
                raise BlockingIOError("the response head is still buffered")
        if not self._corked:
            # Full segments only while the span goes out, as nginx's tcp_nopush does: without
            # it each sendfile call pushes a short last segment (about 15% more CPU per byte
            # and lower throughput on loopback).
            self._cork(True)
        try:
            sent = os.sendfile(self._socket_fd, fd, offset, count)
        except BlockingIOError:
            await self._wait_writable(cycle)
            return 0
        except OSError as exc:
            if exc.errno not in _SOCKET_GONE:
                raise  # the file could not be read: the caller's store fault
            self._abort_response(cycle)
            raise ConnectionResetError("the client is gone") from exc
        if sent == 0 and count:
            self._abort_response(cycle)
            raise EOFError("the file ended early")
        cycle.expected_content_length -= sent
        if sent == count:
            self._cork(False)  # all queued: its last short segment leaves now, not in 200 ms
        return sent

    def _cork(self, on: bool) -> None:
        """Set or clear TCP_CORK (only on an open connection: a closed descriptor's number
        may already belong to another socket). A cut span needs no clearing: it is reset.
        A refusal is no store fault: the bytes go out uncorked, or the send says the socket
        is gone."""
        with contextlib.suppress(OSError):
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))
        self._corked = on

    def _ensure_open(self, cycle: RequestResponseCycle) -> None:
        if cycle.disconnected or self._finished():
            self._abort_response(cycle)  # its connection_lost may be still to come
            raise ConnectionAbortedError("the connection is closed")

    async def _wait_writable(self, cycle: RequestResponseCycle) -> None:
        """Until the socket takes bytes again; ``ConnectionError`` when the connection is cut
        meanwhile, or aborted here after ``send_timeout`` without room."""
        loop = self.loop
        waiter: asyncio.Future[str] = loop.create_future()
        watched = os.dup(self._socket_fd)
        self._watched, self._writable = watched, waiter
        timer = loop.call_later(self.send_timeout, _settle, waiter, "stalled")
        try:
            loop.add_writer(watched, _settle, waiter, "ready")
            outcome = await waiter
        finally:
            timer.cancel()
            self._stop_watching("cut")
        if outcome == "ready":
            return
        if outcome == "stalled":
            self._log_stalled()
        self._abort_response(cycle)
        raise ConnectionAbortedError("the connection was cut")

    def _stop_watching(self, outcome: str) -> None:
        """Drop the duplicate descriptor (it keeps the socket open: a reset must come after)
        and end a wait in progress with ``outcome``."""
        watched, waiter = self._watched, self._writable
        self._watched = self._writable = None
        if watched is not None:
            self.loop.remove_writer(watched)
            os.close(watched)
        if waiter is not None:
            _settle(waiter, outcome)

    # Shutdown

    def shutdown(self) -> None:
        """The server stops: a running response may finish for ``server.shutdown_timeout``
        seconds, then is reset. An idle connection is not closed here: its client may be
        sending a request on it this instant, which a close would lose (a balancer cannot
        always resend it, a POST least of all). Its client closes it, or the keep-alive
        timer does (``server.keepalive_timeout``, which a balancer's idle timeout should
        undercut); a request arriving meanwhile is served with ``Connection: close``."""
        begin_draining()
        self._draining = True
        if self._finished():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # the connection closes once this response is sent
        elif self.timeout_keep_alive_task is None and self._head_bytes == 0:
            # Connected, and not a byte yet: the keep-alive timer bounds its wait too.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
        if self._drain_timer is None:
            self._drain_timer = self.loop.call_later(
                self.limits.shutdown_timeout, self._drain_expired
            )

    def _drain_expired(self) -> None:
        self._drain_timer = None
        if self._finished():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()  # idle (a keep-alive timeout above shutdown_timeout)
            return
        logger.info(
            "aborted a response to %s at shutdown (server.shutdown_timeout %gs)",
            self._peer(),
            self.limits.shutdown_timeout,
        )
        self.abort()

    def abort(self) -> None:
        """Reset the connection: the client sees a cut, never a clean end of body."""
        self._stop_watching("cut")  # its duplicate descriptor would hold the socket open
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.transport.abort()

    def _abort_response(self, cycle: RequestResponseCycle) -> None:
        """Cut ``cycle``'s response: reset, and the cycle counts as disconnected so the
        server neither logs an error nor waits for the rest of the body."""
        _disconnect(cycle)
        self.abort()

    # Answers

    def _refuse(self, rejection: RequestError) -> None:
        if self._finished():
            return
        answer = answer_for(rejection, None)
        message = rejection.message or answer.message
        logger.info("refused a request from %s: %d %s", self._peer(), answer.status, message)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A request in progress: its endpoint sees a disconnect and its answer goes nowhere.
            _disconnect(cycle)
            if cycle.response_started:
                self.abort()
                return
        self._answer(rejection)

    def _answer(self, rejection: RequestError) -> None:
        """Write the envelope for ``rejection`` and close the connection."""
        status, body = request_error_body(rejection)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self._answered = True
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # A lingering close: closing with unread bytes would reset the connection and could
        # destroy the answer before the client reads it, so what still arrives is read and
        # dropped for a moment, after our FIN.
        self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(_LINGER, self.transport.close)

    def _finished(self) -> bool:
        """Closing, or refused and lingering: nothing more to parse, time or answer."""
        return self._answered or self.transport.is_closing()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"


def _disconnect(cycle: RequestResponseCycle) -> None:
    """The cycle's app sees ``http.disconnect`` and its sends go nowhere."""
    cycle.disconnected = True
    cycle.message_event.set()


def _settle(waiter: asyncio.Future[str], outcome: str) -> None:
    if not waiter.done():
        waiter.set_result(outcome)
