"""This process's downloads, counted for ``/healthz`` and for the tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DownloadStats:
    """The bodies sent to clients (counted by the HTTP layer) and the storage reads behind them
    (counted by the document service), for every backend.

    ``open_streams`` are bodies being sent; ``completed`` and ``aborted`` those that ended, and
    ``bytes_sent`` what they sent. ``object_reads`` counts body reads when their iteration starts
    (so a HEAD or a 304, which never iterate, leave it unchanged); ``ranged_reads`` those of them
    that are not the whole object; ``sniff_reads`` the first-bytes reads for MIME sniffing;
    ``bytes_read`` the bytes the stores yielded to body reads (or that left straight from a
    local file); ``zero_copy`` the bodies sent from a local file with ``sendfile``.
    """

    open_streams: int = 0
    completed: int = 0
    aborted: int = 0
    bytes_sent: int = 0
    object_reads: int = 0
    ranged_reads: int = 0
    sniff_reads: int = 0
    bytes_read: int = 0
    zero_copy: int = 0
