"""``GET /metrics`` in Prometheus's text format: this process's registry, or, with several
workers (``PROMETHEUS_MULTIPROC_DIR`` set by ``docproxy serve``), every worker's files summed."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.metrics.instruments import FlushFirst
from proxy.metrics.workers import MULTIPROC_ENV


def registry() -> CollectorRegistry:
    """The registry to expose: the process's own, or one reading all workers' files."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY  # the instruments bring their values up to date when it is collected
    collected = CollectorRegistry()
    collected.register(FlushFirst())  # this worker's own counts are read as they are now
    MultiProcessCollector(collected)
    return collected


def metrics_route() -> Route:
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"])


def start_listener(host: str, port: int) -> None:
    """``metrics.port``: /metrics on a listener of its own (a thread of the process that runs
    the workers), so the API's port need not expose it. OSError when the port cannot be bound."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=registry())
