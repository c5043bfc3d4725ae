"""The folder where several worker processes keep their metric values (prometheus-client's
multiprocess mode), managed by ``docproxy serve``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # ``docproxy serve`` imports this module before prometheus-client is needed
    from proxy.metrics.instruments import Instruments

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_folder(workers: int) -> Path | None:
    """With several workers: the operator's ``PROMETHEUS_MULTIPROC_DIR`` or a private temporary
    folder, emptied now (a previous run's counts must not add up with this one's) and named in
    the environment the workers inherit. Returns the folder when this call made it."""
    given = os.environ.get(MULTIPROC_ENV)
    if workers <= 1 and not given:
        return None  # one process: its own registry, no files
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="docproxy-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    return None if given else folder


def remove_folder(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def worker_starts(instruments: Instruments) -> None:
    """With several workers, each writes its counts to its file once a second (a scrape answered
    by another worker reads them from there), on the running event loop."""
    if os.environ.get(MULTIPROC_ENV):
        instruments.start_flushing()


def worker_exits() -> None:
    """The worker's last counts are written; its live gauges (open streams) leave the sum."""
    from proxy.metrics.instruments import made

    if (instruments := made()) is not None:
        instruments.stop_flushing()
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
