"""The server's bounds on what one client may hold: request-head sizes, timeouts, connections.

These keys live in the ``server`` section beside the address and workers; this module reads
them from that section (``parse_limits``) so the edge owns its own defaults and checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.section import Section, given
from proxy.server.hosts import normal_pattern, valid_pattern


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_header_bytes: int = 64 * 1024  # request line and header fields together -> 431
    max_header_fields: int = 100  # -> 431
    max_target_bytes: int = 8 * 1024  # the request target (path and query) -> 414
    header_timeout: float = 10.0  # the whole head, from connect or the previous response -> 408
    body_timeout: float = 30.0  # a request body that stops arriving for this long -> 408
    keepalive_timeout: float = 5.0  # an idle keep-alive connection is closed
    max_connections: int = 1000  # per worker; more are refused at once with 503
    shutdown_timeout: float = 30.0  # running downloads may finish for this long on SIGTERM
    # Host names requests may name (lower case; "*.example.com" for any subdomain); empty: any.
    allowed_hosts: tuple[str, ...] = ()


def parse_limits(s: Section) -> ServerLimits:
    """Read the limit keys of the ``server`` section (the caller finishes the section)."""
    return ServerLimits(
        **given(
            max_header_bytes=s.size("max_header_bytes", minimum=1024),
            max_header_fields=s.integer("max_header_fields", minimum=1),
            max_target_bytes=s.size("max_target_bytes", minimum=16),
            header_timeout=s.duration("header_timeout"),
            body_timeout=s.duration("body_timeout"),
            keepalive_timeout=s.duration("keepalive_timeout"),
            max_connections=s.integer("max_connections", minimum=1),
            shutdown_timeout=s.number("shutdown_timeout", minimum=0),
            allowed_hosts=_allowed_hosts(s),
        )
    )


def _allowed_hosts(s: Section) -> tuple[str, ...] | None:
    hosts = []
    for index, value in enumerate(s.sequence("allowed_hosts")):
        if not isinstance(value, str) or not valid_pattern(value):
            s.error(f"allowed_hosts[{index}]", f"must be a host name or address (got {value!r})")
            continue
        hosts.append(normal_pattern(value))
    return tuple(hosts) or None
