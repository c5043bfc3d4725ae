"""The progress of one download: a bar on a terminal, a line every few seconds on a pipe."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TextIO


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_time(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class Progress:
    """A one-line bar on a terminal; on a pipe, a line every few seconds and a summary."""

    stream: TextIO
    name: str
    total: int | None
    done: int  # bytes so far, those of a resumed partial file included
    quiet: bool
    resumed_at: int = field(init=False)
    tty: bool = field(init=False)
    started: float = field(init=False, default_factory=time.monotonic)
    shown: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.resumed_at = self.done
        self.tty = self.stream.isatty()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.resumed_at) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        if self.total:
            percent = 100 * self.done / self.total
            left = (self.total - self.done) / rate if rate > 0 else None
            eta = human_time(left) if left is not None else "--:--"
            width = 24
            filled = int(width * self.done / self.total)
            bar = "#" * filled + "-" * (width - filled)
            return (
                f"{self.name} [{bar}] {percent:3.0f}% {human_bytes(self.done)} of "
                f"{human_bytes(self.total)}  {human_bytes(rate)}/s  {eta} left"
            )
        return f"{self.name} {human_bytes(self.done)}  {human_bytes(rate)}/s"

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.quiet or now - self.shown < (0.1 if self.tty else 2.0):
            return
        self.shown = now
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self, message: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
        self.stream.write(message + "\n")
        self.stream.flush()
