"""``docproxy serve``: check the config, bind the socket, then run uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from proxy.catalog.errors import CatalogUnavailable
from proxy.cli.check_config import check_catalog
from proxy.config.loading import CONFIG_ENV, config_path, load_settings
from proxy.config.published import is_loopback, published_keys, published_warning
from proxy.config.settings import ConfigError
from proxy.metrics.exposition import start_listener
from proxy.metrics.workers import prepare_folder, remove_folder
from proxy.runtime.logging import uvicorn_log_config
from proxy.runtime.malloc import tune_malloc
from proxy.runtime.redaction import install_redaction
from proxy.server.factory import protocol_factory

STARTUP_FAILURE = 3  # uvicorn's exit status when the application fails to start


class CannotListen(Exception):
    """The listening address cannot be bound (in use, not this machine's, not allowed)."""


def listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before uvicorn starts: a busy port is then refused before
    the application has started (and said "ready"), in one line that names the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        address = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        reason = exc.strerror or str(exc)
        raise CannotListen(f"cannot listen on {address}: {reason[:1].lower()}{reason[1:]}") from exc
    sock.set_inheritable(True)  # worker processes serve on it too
    return sock


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy.server.supervisor import DrainingMultiprocess  # imports uvicorn's supervisors

    path = config_path(args.config)
    settings = load_settings(path)  # refuse a bad config before uvicorn starts
    catalog_down = None
    try:
        check_catalog(settings)  # refuse a mapping the database contradicts, too
    except CatalogUnavailable as exc:
        # Not fatal: the service answers 500 until the database is back, then serves.
        catalog_down = f"catalog database unavailable at start: {exc}"
    log_format = settings.server.log_format
    if catalog_down and log_format == "text":
        print(f"docproxy: warning: {catalog_down}", file=sys.stderr)
    tune_malloc()  # before uvicorn starts threads or worker processes
    # Workers re-create the app from the environment, so the config path travels there.
    os.environ[CONFIG_ENV] = str(Path(path).resolve())
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    published = published_keys(settings)
    if published and not is_loopback(host):
        # Anyone could mint tokens and links for this service: refused like a bad config.
        raise ConfigError([f"{published_warning(published)} (listening on {host})"])
    limits = settings.server.limits
    config = uvicorn.Config(
        "proxy.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=args.workers or settings.server.workers,
        log_level=settings.server.log_level,
        access_log=settings.server.access_log,
        **({"log_config": log_config} if (log_config := uvicorn_log_config(log_format)) else {}),
        proxy_headers=False,
        server_header=False,  # no "server: uvicorn" on every response (Date stays)
        # The edge's bounds and timers; spawned workers get the factory pickled.
        http=protocol_factory(limits, settings.download.send_timeout),  # type: ignore[arg-type]
        ws="none",  # no WebSocket endpoints: an Upgrade header is answered as a plain request
        timeout_keep_alive=limits.keepalive_timeout,  # type: ignore[arg-type]
        # A backstop only: each connection resets itself once shutdown_timeout has passed.
        timeout_graceful_shutdown=limits.shutdown_timeout + 2,  # type: ignore[arg-type]
    )
    install_redaction()  # on the handlers uvicorn.Config has just set up in this process
    if published:  # on a loopback address: served, once told loudly
        logging.getLogger("uvicorn.error").warning(published_warning(published))
    if catalog_down and log_format == "json":  # uvicorn's logging is set up by now
        logging.getLogger("uvicorn.error").warning(catalog_down)
    metrics = settings.metrics
    # Several workers keep their metrics in files; this process names and empties the folder.
    metrics_folder = prepare_folder(config.workers) if metrics.enabled else None
    sock = listen_socket(host, port)
    if metrics.enabled and metrics.port is not None:
        metrics_host = metrics.host or host
        try:
            start_listener(metrics_host, metrics.port)
        except OSError as exc:
            sock.close()
            remove_folder(metrics_folder)
            reason = exc.strerror or str(exc)
            raise CannotListen(
                f"cannot listen on {metrics_host}:{metrics.port} (metrics.port): {reason}"
            ) from exc
    # uvicorn says where it listens only when it binds the socket itself.
    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
        f"[{host}]" if ":" in host else host,
        sock.getsockname()[1],
    )
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            DrainingMultiprocess(config, sockets=[sock]).run()
            return 0
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it shut down on
        pass
    finally:
        sock.close()
        remove_folder(metrics_folder)
    return 0 if server.started else STARTUP_FAILURE
