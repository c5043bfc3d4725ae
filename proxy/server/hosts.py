"""The ``Host`` header: its syntax (RFC 9110: a name or address, an optional port) and the
optional list of names a deployment answers to (``server.allowed_hosts``)."""

from __future__ import annotations

import ipaddress
import re

# DNS-style labels (underscores allowed: container and service names carry them), an IPv4
# address matches too; an IPv6 address comes in brackets.
_LABEL = rb"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_NAME = re.compile(rb"^" + _LABEL + rb"(\." + _LABEL + rb")*\.?$")
_PATTERN = re.compile(r"^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$")
_PORT = re.compile(rb"^[0-9]{1,5}$")


def host_name(value: bytes) -> str | None:
    """The lower-case name or address in a ``Host`` value (port left off), or None when the
    value is not a host with an optional port."""
    if value.startswith(b"["):
        address, bracket, rest = value[1:].partition(b"]")
        if not bracket or (rest and not (rest[:1] == b":" and _PORT.match(rest[1:]))):
            return None
        try:
            return str(ipaddress.IPv6Address(address.decode("ascii")))
        except (ValueError, UnicodeDecodeError):
            return None
    name, colon, port = value.partition(b":")
    if colon and not _PORT.match(port):
        return None
    if len(name) > 253 or not _NAME.match(name):
        return None
    return name.decode("ascii").lower().rstrip(".")


def valid_pattern(pattern: str) -> bool:
    """Whether ``pattern`` may stand in ``server.allowed_hosts``: a name, ``*.`` and a domain,
    or an address."""
    if _PATTERN.match(pattern):
        return True
    try:
        ipaddress.ip_address(pattern.strip("[]"))
    except ValueError:
        return False
    return True


def normal_pattern(pattern: str) -> str:
    return pattern.lower().rstrip(".").strip("[]")


def allowed(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether the host ``name`` is one of ``patterns`` (normalised); ``*.example.com`` stands
    for every name below example.com."""
    for pattern in patterns:
        if name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
            return True
    return False
