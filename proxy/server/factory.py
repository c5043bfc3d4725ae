"""What ``docproxy serve`` hands uvicorn as its HTTP protocol: a picklable factory.

Worker processes receive it pickled and must answer uvicorn's first health ping within a few
seconds, so unpickling it imports only this module and the limits; the protocol (uvicorn's
parser, the envelope) is imported at the first connection.
"""

from __future__ import annotations

import functools
from typing import Any

from proxy.server.config import ServerLimits


def _edge_protocol(*args: Any, limits: ServerLimits, send_timeout: float, **kwargs: Any) -> Any:
    from proxy.server.protocol import EdgeProtocol

    return EdgeProtocol(*args, limits=limits, send_timeout=send_timeout, **kwargs)


def protocol_factory(limits: ServerLimits, send_timeout: float) -> functools.partial[Any]:
    """uvicorn's ``http=`` setting: builds one ``EdgeProtocol`` per connection."""
    return functools.partial(_edge_protocol, limits=limits, send_timeout=send_timeout)
