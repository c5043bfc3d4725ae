"""What a row module declares: the rows it produces, the servers each needs, how to measure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bench.measure import Bench, Row

# The servers a row may ask for; ``bench.run`` starts each one needed once, shared by the rows.
SERVER_NAMES = frozenset(
    {
        "docproxy",  # one worker, the local backend (and S3 against moto when moto runs)
        "docproxy-accel",  # one worker answering X-Accel-Redirect to the nginx in front
        "docproxy-2w",  # two workers
        "docproxy-plain",  # one worker, metrics and audit off
        "docproxy-observed",  # one worker, metrics on, JSON logs with the audit trail
        "docproxy-redis",  # one worker, the shared state in Redis at 127.0.0.1:6379
        "nginx",  # one worker; also in front of docproxy-accel
        "nginx-2w",  # two workers
        "rclone",  # rclone serve http, capped at one core
        "starlette",  # the bare JSON route
        "moto",  # S3
    }
)


@dataclass(frozen=True)
class RowGroup:
    """``needs``: row number -> the servers it uses, in table order. ``measure`` runs the
    rows asked for (a subset of ``needs``) and returns them; rows that share a measurement
    are one group, so that measurement runs once."""

    needs: Mapping[str, frozenset[str]]
    measure: Callable[[Bench, frozenset[str]], list[Row]]

    def __post_init__(self) -> None:
        for number, servers in self.needs.items():
            unknown = servers - SERVER_NAMES
            if unknown:
                raise ValueError(f"row {number} needs unknown servers {sorted(unknown)}")

    @property
    def numbers(self) -> tuple[str, ...]:
        return tuple(self.needs)


def needs(*names: str) -> frozenset[str]:
    return frozenset(names)
