"""Counts every answer by route and status: the route is the matched path template (``/download/
{document_id:path}``), ``preflight`` for a CORS preflight the CORS layer answered, ``unmatched``
for a path no route has, so ids never become labels.

The count is taken by the request's outermost layer (``proxy.http.requestid``), which already
sees each answer's start: a layer of its own would cost every request a coroutine and a wrapped
``send``."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import Scope

from proxy.metrics.instruments import Tally, active

UNMATCHED = "unmatched"
PREFLIGHT = "preflight"


class AnswerCounter:
    """``counter(scope, status)``: one answer counted, once the request is over."""

    def __init__(self, routes: Mapping[object, str]) -> None:
        self.routes = routes  # endpoint -> its path template (the router sets scope["endpoint"])
        # (endpoint, status) -> its running total: one look-up per answer of a route.
        self._tallies: dict[tuple[object, int], Tally] = {}

    def __call__(self, scope: Scope, status: int) -> None:
        instruments = active()
        if instruments is None:
            return
        endpoint = scope.get("endpoint")
        try:
            self._tallies[endpoint, status].total += 1
            return
        except KeyError:
            pass
        route = self.routes.get(endpoint)
        if route is None:
            instruments.answered(PREFLIGHT if _is_preflight(scope) else UNMATCHED, status)
            return
        # A route's answers with this status are counted by their tally from now on.
        tally = self._tallies[endpoint, status] = instruments.tally_of_answers(route, status)
        tally.total += 1


def _is_preflight(scope: Scope) -> bool:
    return scope["method"] == "OPTIONS" and any(
        name == b"access-control-request-method" for name, _ in scope["headers"]
    )
