"""The ASGI application: wiring settings to catalog, storage and endpoints, and the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backends.registry import backend_class
from backends.routing import StorageRouter
from proxy.auth.archive_links import ArchiveLinkSigner
from proxy.auth.issuers import IssuerTokens
from proxy.auth.links import LinkSigner
from proxy.auth.tokens import TokenAuthority
from proxy.catalog.embedded import ensure_schema
from proxy.catalog.lookup import Catalog
from proxy.config.loading import config_path, load_settings
from proxy.config.settings import AuthConfig, ConfigError, Settings
from proxy.documents.archive import ArchiveService
from proxy.documents.content_type import libmagic_problem
from proxy.documents.service import DocumentService, PresignedUrlCache
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
from proxy.http.streaming import kernel_in_flight
from proxy.limits.logins import FailedLogins
from proxy.metrics import instruments
from proxy.metrics.exposition import metrics_route
from proxy.metrics.middleware import AnswerCounter
from proxy.metrics.workers import worker_exits, worker_starts
from proxy.runtime.logging import configure_logging
from proxy.state.limits import CallerBudget
from proxy.state.registry import state_store
from proxy.state.store import StateStore
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


# What SIGHUP applies in a running worker; other sections take effect at the next start.
RELOADED = ("auth", "presign", "limits")


def reload_settings(
    current: Settings,
    endpoints: Endpoints,
    documents: DocumentService,
    archives: ArchiveService,
    state: StateStore,
) -> Settings:
    """Re-read the config file and apply its clients, keys and limits to the running worker;
    a file that does not validate changes nothing (its problems are logged, key by key)."""
    try:
        new = load_settings(current.source)
    except ConfigError as exc:
        logger.error(
            "config reload refused, the running settings stay: %s", "; ".join(exc.problems)
        )
        return current
    # Each object is replaced whole, so a request sees either the old or the new one.
    endpoints.tokens = TokenAuthority(new.auth)
    if _issuer_keys(new.auth) != _issuer_keys(current.auth):
        endpoints.issuers = IssuerTokens(new.auth)  # unchanged: the fetched keys stay cached
    if new.presign != current.presign:
        links = LinkSigner(new.presign)
        archive_links = ArchiveLinkSigner(links)
        endpoints.links = documents.links = links
        endpoints.archive_links = archives.links = archive_links
        # URLs signed with the old key must not be handed out again.
        documents.presigned = PresignedUrlCache(new.presign.reuse_margin)
    endpoints.downloads = CallerBudget(state, "downloads", new.limits.downloads_per_minute)
    endpoints.presigns = CallerBudget(state, "presigns", new.limits.presigns_per_minute)
    later = [
        f.name
        for f in dataclasses.fields(Settings)
        if f.name not in (*RELOADED, "source") and getattr(new, f.name) != getattr(current, f.name)
    ]
    if later:
        logger.warning(
            "config reloaded (auth, presign, limits); %s change at the next start",
            ", ".join(later),
        )
    else:
        logger.info("config reloaded: %s", new.source)
    return dataclasses.replace(current, **{name: getattr(new, name) for name in RELOADED})


def _issuer_keys(auth: AuthConfig) -> tuple[object, ...]:
    """What the issuer checks are built from."""
    return (auth.issuers, auth.jwks_min_refresh, auth.jwks_timeout, auth.leeway)


def _in_flight(settings: Settings) -> int:
    """download.sendfile_in_flight, or what this host's kernel may hold in flight."""
    given = settings.download.sendfile_in_flight
    return given if given is not None else kernel_in_flight()


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
    archive_links = ArchiveLinkSigner(links)
    endpoints = Endpoints(
        tokens=TokenAuthority(settings.auth),
        issuers=IssuerTokens(settings.auth),
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
        sendfile=settings.download.sendfile,
        in_flight=_in_flight(settings),
        archives=ArchiveService(
            documents, archive_links, settings.zip, settings.server.limits.max_target_bytes
        ),
        archive_links=archive_links,
    )
    readiness = Readiness(catalog, router.backends, settings.health)
    running = settings

    def on_hangup() -> None:
        nonlocal running
        assert endpoints.archives is not None
        running = reload_settings(running, endpoints, documents, endpoints.archives, state)

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
        if (metered := instruments.active()) is not None:
            worker_starts(metered)  # with several workers, the timed flush of this one's counts
        hangup = _on_signal(signal.SIGHUP, on_hangup)
        logger.info("docproxy ready: config %s", settings.source)
        try:
            yield
        finally:
            if hangup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await revocations.stop()
            await state.close()
            await catalog.disconnect()
            await router.close()
            worker_exits()

    routes = endpoints.routes() + health_routes(readiness, stats)
    if settings.metrics.enabled and settings.metrics.port is None:
        routes.append(metrics_route())
    counter = None
    if settings.metrics.enabled:
        templates = {route.endpoint: route.path for route in routes if isinstance(route, Route)}
        counter = AnswerCounter(templates)
    middleware = [
        Middleware(QuietStartupFailure),
        # Outside CORS: a preflight's answer has an id too, and is counted.
        Middleware(RequestIdMiddleware, on_answered=counter),
        *cors_middleware(settings.cors),
    ]
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


def _on_signal(signum: int, handler: Callable[[], None]) -> bool:
    """Run ``handler`` on the event loop at each ``signum``; False where that cannot be done
    (not the main thread, as under a server that runs the app elsewhere)."""
    try:
        asyncio.get_running_loop().add_signal_handler(signum, handler)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True


def app_from_environment() -> Starlette:
    """uvicorn factory (``--factory``): reads the config named by $DOCPROXY_CONFIG."""
    return create_app(load_settings(config_path()))
