"""Counts every answer by route and status: the route is the matched path template (``/download/
{document_id:path}``), ``unmatched`` for a path no route has, so ids never become labels.

With several workers, it also starts the worker's timed flush of its counts (``proxy.metrics.
workers.worker_starts``) when the application's lifespan starts, on the worker's event loop."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.metrics.instruments import active
from proxy.metrics.workers import worker_starts

UNMATCHED = "unmatched"


class RequestMetrics:
    def __init__(self, app: ASGIApp, routes: Mapping[object, str]) -> None:
        self.app = app
        self.routes = routes  # endpoint -> its path template (the router sets scope["endpoint"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instruments = active()
        if scope["type"] != "http" or instruments is None:
            if scope["type"] == "lifespan" and instruments is not None:
                worker_starts(instruments)
            await self.app(scope, receive, send)
            return
        status = 500  # an exception that escapes is a 500 (or a reset)

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = self.routes.get(scope.get("endpoint"), UNMATCHED)
            instruments.answered(route, status)
