"""The ASGI application: wiring settings to catalog, storage and endpoints, and the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from backends.registry import backend_class
from backends.routing import StorageRouter
from proxy.accel import AccelRedirect
from proxy.auth import TokenAuthority
from proxy.catalog import Catalog
from proxy.config import Settings, config_path, load_settings
from proxy.embedded import ensure_schema
from proxy.envelope import EXCEPTION_HANDLERS
from proxy.links import LinkSigner
from proxy.routes import Endpoints
from proxy.service import DocumentService
from proxy.streaming import StreamStats

logger = logging.getLogger("docproxy")


def build_router(settings: Settings) -> StorageRouter:
    backends = {
        entry.name: backend_class(entry.protocol)(entry.name, entry.options)
        for entry in settings.storage.backends
    }
    return StorageRouter(backends, settings.storage.default)


def configure_logging(level: str) -> None:
    """docproxy's own log lines (refusals, storage faults, download outcomes) to stderr."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())


def create_app(settings: Settings) -> Starlette:
    configure_logging(settings.server.log_level)
    catalog = Catalog(settings.catalog)
    router = build_router(settings)
    documents = DocumentService(
        catalog,
        router,
        LinkSigner(settings.presign),
        settings.download,
        presign_reuse_margin=settings.presign.reuse_margin,
    )
    endpoints = Endpoints(
        tokens=TokenAuthority(settings.auth),
        documents=documents,
        stats=StreamStats(),
        cache_control=settings.download.cache_control,
        public_url=settings.server.public_url,
        accel=AccelRedirect.from_settings(settings),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.catalog.embedded:
            ensure_schema(settings)
        await router.open()
        await catalog.connect()
        logger.info("docproxy ready: config %s", settings.source)
        try:
            yield
        finally:
            await catalog.disconnect()
            await router.close()

    app = Starlette(
        routes=endpoints.routes(),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.endpoints = endpoints
    return app


def app_from_environment() -> Starlette:
    """uvicorn factory (``--factory``): reads the config named by $DOCPROXY_CONFIG."""
    return create_app(load_settings(config_path()))
