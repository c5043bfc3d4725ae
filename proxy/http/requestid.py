"""The request id: taken from ``X-Request-ID`` when it is 1-128 letters, digits, ``.``, ``_``
or ``-``, else made here; echoed on the response and named by every log line of the request
(``proxy.runtime.logging.REQUEST_ID``), uvicorn's access line included.

Being the outermost layer that sees every answer start, it also hands each answer's status to
``on_answered`` (the metrics' count) when one is given."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.runtime.logging import REQUEST_ID

HEADER = b"x-request-id"
_ACCEPTED = re.compile(rb"[A-Za-z0-9._-]{1,128}")

# A made id is this process's random prefix and a count: unique across processes and
# replicas like a random UUID, at a fraction of its cost on every request.
_prefix = ""
_counter = itertools.count(1)


def _new_prefix() -> None:
    global _prefix, _counter
    _prefix, _counter = os.urandom(8).hex(), itertools.count(1)


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)  # a forked worker draws its own


def made_id() -> str:
    return f"{_prefix}{next(_counter):016x}"


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's id when it is acceptable, else a new one (a client's odd value is replaced,
    never echoed: it would reach the logs)."""
    for name, value in headers:
        if name == HEADER:
            if _ACCEPTED.fullmatch(value):
                return value.decode("ascii")
            break
    return made_id()


class RequestIdMiddleware:
    def __init__(
        self, app: ASGIApp, on_answered: Callable[[Scope, int], None] | None = None
    ) -> None:
        self.app = app
        self.on_answered = on_answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        REQUEST_ID.set(rid)  # each request runs in a task (a context) of its own
        echoed = (HEADER, rid.encode("ascii"))
        status = 500  # an exception that escapes is a 500 (or a reset)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.on_answered is not None:
                self.on_answered(scope, status)
