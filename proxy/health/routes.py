"""The health endpoints: ``/livez`` (the process serves), ``/readyz`` (it can serve downloads:
see ``proxy.health.readiness``) and ``/healthz`` (liveness, with this process's download
counters, kept for existing probes)."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.documents.stats import DownloadStats
from proxy.health.readiness import Readiness
from proxy.http.envelope import envelope, ok
from proxy.runtime.drain import is_draining

NOT_READY = "Service unavailable"
DRAINING = {"process": "shutting down"}


def health_routes(readiness: Readiness, stats: DownloadStats) -> list[Route]:
    async def livez(request: Request) -> Response:
        return ok({"status": "ok"})

    async def readyz(request: Request) -> Response:
        # Shutting down: unready at once, so balancers stop sending before the listener closes.
        if is_draining():
            return envelope(503, NOT_READY, {"status": "unavailable", "failing": DRAINING})
        verdict = await readiness.verdict()
        if verdict.ready:
            return ok({"status": "ready"})
        failing = dict(verdict.failures)
        return envelope(503, NOT_READY, {"status": "unavailable", "failing": failing})

    async def healthz(request: Request) -> Response:
        return ok({"status": "ok", **asdict(stats)})

    return [
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
