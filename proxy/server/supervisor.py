"""uvicorn's worker supervisor, made to stop listening as soon as it is told to stop.

With ``--workers N`` the parent holds the listening socket too: left open while the workers
drain, new connections would queue on it unanswered until the last worker exits. Closing it
on SIGTERM/SIGINT makes them refused at once, so a balancer moves on.
"""

from __future__ import annotations

from uvicorn.supervisors import Multiprocess


class DrainingMultiprocess(Multiprocess):
    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            sock.close()
