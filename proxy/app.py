"""The ASGI application: wiring settings to catalog, storage and endpoints, and the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backends.registry import backend_class
from backends.routing import StorageRouter
from proxy.auth.archive_links import ArchiveLinkSigner
from proxy.auth.links import LinkSigner
from proxy.auth.tokens import TokenAuthority
from proxy.catalog.embedded import ensure_schema
from proxy.catalog.lookup import Catalog
from proxy.config.loading import config_path, load_settings
from proxy.config.settings import Settings
from proxy.documents.archive import ArchiveService
from proxy.documents.content_type import libmagic_problem
from proxy.documents.service import DocumentService
from proxy.documents.stats import DownloadStats
from proxy.health.readiness import Readiness
from proxy.health.routes import health_routes
from proxy.http import audit
from proxy.http.accel import AccelRedirect
from proxy.http.accesslog import use_direct_handler
from proxy.http.cors import cors_middleware
from proxy.http.envelope import EXCEPTION_HANDLERS
from proxy.http.requestid import RequestIdMiddleware
from proxy.http.routes import Endpoints
from proxy.http.status_lines import use_reason_phrases
from proxy.limits.logins import FailedLogins
from proxy.metrics import instruments
from proxy.metrics.exposition import metrics_route
from proxy.metrics.middleware import RequestMetrics
from proxy.metrics.workers import worker_exits
from proxy.runtime.logging import configure_logging
from proxy.state.limits import CallerBudget
from proxy.state.registry import state_store
from proxy.state.watch import WatchedRevocations

logger = logging.getLogger("docproxy")


def build_router(settings: Settings) -> StorageRouter:
    backends = {
        entry.name: backend_class(entry.protocol)(entry.name, entry.options)
        for entry in settings.storage.backends
    }
    return StorageRouter(backends, settings.storage.default)


class StartupFailed(Exception):
    """The lifespan could not open the catalog or a store; the reason is already logged."""


class QuietStartupFailure:
    """uvicorn prints the lifespan's traceback when start-up fails. docproxy has logged the one
    line that says why, so that traceback is dropped (the exit status still says it failed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_quietly(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and StartupFailed.__name__ in (
                message.get("message") or ""
            ):
                message = {**message, "message": ""}
            await send(message)

        await self.app(scope, receive, send_quietly)


def create_app(settings: Settings) -> Starlette:
    handler = configure_logging(settings.server.log_level, settings.server.log_format)
    as_json = settings.server.log_format == "json"
    if handler is not None or as_json:
        use_direct_handler(None if as_json else handler)  # JSON: through its formatter
    audit.enable(settings.server.audit_log, settings.server.log_format, handler)
    instruments.activate(settings.metrics.enabled)
    use_reason_phrases()  # each worker builds its app here, in the process that serves
    catalog = Catalog(settings.catalog)
    router = build_router(settings)
    links = LinkSigner(settings.presign)
    stats = DownloadStats()
    state = state_store(settings)
    revocations = WatchedRevocations(state)
    documents = DocumentService(
        catalog,
        router,
        links,
        settings.download,
        stats,
        presign_reuse_margin=settings.presign.reuse_margin,
    )
    archive_links = ArchiveLinkSigner(settings.presign)
    endpoints = Endpoints(
        tokens=TokenAuthority(settings.auth),
        failed_logins=FailedLogins.from_config(settings.auth),
        links=links,
        documents=documents,
        stats=stats,
        cache_control=settings.download.cache_control,
        public_url=settings.server.public_url,
        revocations=revocations,
        state=state,
        downloads=CallerBudget(state, "downloads", settings.limits.downloads_per_minute),
        presigns=CallerBudget(state, "presigns", settings.limits.presigns_per_minute),
        accel=AccelRedirect.from_settings(settings),
        archives=ArchiveService(
            documents, archive_links, settings.zip, settings.server.limits.max_target_bytes
        ),
        archive_links=archive_links,
    )
    readiness = Readiness(catalog, router.backends, settings.health)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            if settings.catalog.embedded:
                ensure_schema(settings)
            await router.open()
            # A wrong mapping refuses to start; a database that is merely down does not.
            await catalog.open()
            await state.open()
        except Exception as exc:
            logger.error("docproxy cannot start: %s: %s", type(exc).__name__, exc)
            raise StartupFailed(str(exc)) from exc
        if settings.download.sniff_bytes and (problem := libmagic_problem()):
            logger.warning(
                "MIME sniffing is off: libmagic cannot be loaded (%s); install the system "
                "library (Debian and Ubuntu: libmagic1)",
                problem,
            )
        await revocations.start()
        logger.info("docproxy ready: config %s", settings.source)
        try:
            yield
        finally:
            await revocations.stop()
            await state.close()
            await catalog.disconnect()
            await router.close()
            worker_exits()

    routes = endpoints.routes() + health_routes(readiness, stats)
    if settings.metrics.enabled and settings.metrics.port is None:
        routes.append(metrics_route())
    middleware = [
        Middleware(QuietStartupFailure),
        Middleware(RequestIdMiddleware),  # outside CORS: a preflight's answer has an id too
        *cors_middleware(settings.cors),
    ]
    if settings.metrics.enabled:
        templates = {route.endpoint: route.path for route in routes if isinstance(route, Route)}
        middleware.append(Middleware(RequestMetrics, routes=templates))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    # No 307 from /links to /links/ (or /healthz/ to /healthz): an unknown path answers 404
    # in the envelope like any other.
    app.router.redirect_slashes = False
    return app


def app_from_environment() -> Starlette:
    """uvicorn factory (``--factory``): reads the config named by $DOCPROXY_CONFIG."""
    return create_app(load_settings(config_path()))
