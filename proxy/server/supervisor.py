"""uvicorn's worker supervisor, made to stop listening as soon as it is told to stop.

With ``--workers N`` the parent holds the listening socket too: left open while the workers
drain, new connections would queue on it unanswered until the last worker exits. Closing it
on SIGTERM/SIGINT makes them refused at once, so a balancer moves on.
"""

from __future__ import annotations

import logging
import os
import signal

from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")


class DrainingMultiprocess(Multiprocess):
    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_hup(self) -> None:
        """Each worker re-reads the config itself (``proxy.app``): nothing is restarted, so
        no connection is dropped (uvicorn's own SIGHUP restarts every worker)."""
        logger.info("Received SIGHUP, each worker re-reads the config")
        for process in self.processes:
            if process.process.pid is not None and process.process.is_alive():
                os.kill(process.process.pid, signal.SIGHUP)

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            sock.close()
