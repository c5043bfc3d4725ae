"""A ZIP archive built while it is sent, from documents read asynchronously out of any store.

zipstream-ng writes the format (ZIP64 when needed, data descriptors, sizes known in advance)
but pulls each entry's bytes synchronously. ``Pull`` bridges that to the stores' async reads
without a thread: an entry's iterable hands zipstream an empty chunk and, while zipstream
passes it out, the async side reads the real one. One chunk per archive is held at a time, so
memory and backpressure are those of a single download.
"""

from __future__ import annotations

import struct
import time
import zipfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import zipstream.ng
from isal import isal_zlib

from proxy.documents.errors import StoreFailed

# zipstream checksums entries with zipfile's (zlib's) crc32, about 1.2 GB/s on one core here,
# which would bound an archive's speed; ISA-L's computes the same CRC-32 about ten times faster.
zipstream.ng.crc32 = isal_zlib.crc32

# Small pieces (headers, data descriptors, small documents) are sent together up to this size:
# one ASGI send per piece would cost more than the bytes.
COALESCE_BYTES = 64 * 1024
_DOS_TIME = struct.Struct("<HH")
_HEADER_TIME_AT = 10  # offset of the time and date in a local file header


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of the archive: its name, size, modification time and how to read it."""

    name: str
    size: int
    modified: float | None  # seconds since the epoch; None: now
    open: Callable[[], AsyncIterator[bytes]]


def zip_date(modified: float | None) -> tuple[int, int, int, int, int, int]:
    """A modification time as ZIP's date fields, in UTC, clamped to what ZIP can say."""
    date = time.gmtime(modified if modified is not None else time.time())[:6]
    return min(max(zipstream.ng.MIN_DATE, date), zipstream.ng.MAX_DATE)  # type: ignore[return-value]


class DatedZipStream(zipstream.ng.ZipStream):
    """A ZipStream whose entries carry the store's modification times instead of "now".

    zipstream dates an added iterable when it writes it; this rewrites the date in the entry's
    local header (same length, so offsets hold) and in its central directory record.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dates: deque[tuple[int, int, int, int, int, int]] = deque()

    def add_dated(
        self, data: Iterator[bytes], name: str, size: int, modified: float | None
    ) -> None:
        self._dates.append(zip_date(modified))
        self.add(data, name, size=size)

    def _gen_file_entry(self, **kwargs: Any) -> Iterator[bytes]:
        date_time = self._dates.popleft()  # entries are written in the order they were added
        entry = super()._gen_file_entry(**kwargs)
        header = next(entry)
        dosdate, dostime = zipstream.ng._timestamp_to_dos(date_time)
        end = _HEADER_TIME_AT + _DOS_TIME.size
        yield header[:_HEADER_TIME_AT] + _DOS_TIME.pack(dostime, dosdate) + header[end:]
        yield from entry
        self._filelist[-1].date_time = date_time


class Pull:
    """The one-chunk hand-over between zipstream's synchronous pulls and async reads."""

    def __init__(self) -> None:
        self.wanted: Entry | None = None  # the entry whose next chunk zipstream waits for
        self.chunk: bytes | None = None  # that chunk, or None at the entry's end

    def entry_data(self, entry: Entry) -> Iterator[bytes]:
        while True:
            self.wanted = entry
            yield b""  # passes through zipstream (CRC and size unchanged) to the async side
            chunk, self.chunk = self.chunk, None
            if chunk is None:
                return
            yield chunk


def archive_length(entries: Sequence[Entry]) -> int:
    """The exact size of the stored (uncompressed) archive of ``entries``."""
    stream = _build(entries, compress=False, pull=Pull())
    return len(stream)


def _build(entries: Sequence[Entry], *, compress: bool, pull: Pull) -> DatedZipStream:
    stream = DatedZipStream(
        compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED,
        sized=not compress,
    )
    for entry in entries:
        stream.add_dated(pull.entry_data(entry), entry.name, entry.size, entry.modified)
    return stream


async def archive_chunks(entries: Sequence[Entry], *, compress: bool) -> AsyncIterator[bytes]:
    """The archive's bytes. An entry whose store yields more or fewer bytes than its size
    raises StoreFailed: the archive must then be cut, never end as a valid one without it."""
    pull = Pull()
    stream = _build(entries, compress=compress, pull=pull)
    reading: Entry | None = None
    reader: AsyncIterator[bytes] | None = None
    received = 0
    pending = bytearray()
    try:
        for piece in stream:
            wanted = pull.wanted
            if wanted is not None:
                pull.wanted = None
                if wanted is not reading:
                    if reader is not None:
                        await reader.aclose()  # type: ignore[attr-defined]
                    reading, reader, received = wanted, wanted.open(), 0
                assert reader is not None
                chunk = await anext(reader, None)
                received += len(chunk) if chunk is not None else 0
                if received > wanted.size or (chunk is None and received != wanted.size):
                    raise StoreFailed(
                        f"{wanted.name}: the store gave {received} bytes of {wanted.size}"
                    )
                pull.chunk = chunk
            if len(piece) >= COALESCE_BYTES:
                if pending:
                    yield bytes(pending)
                    pending.clear()
                yield piece
            elif piece:
                pending += piece
                if len(pending) >= COALESCE_BYTES:
                    yield bytes(pending)
                    pending.clear()
        if pending:
            yield bytes(pending)
    finally:
        if reader is not None:
            await reader.aclose()  # type: ignore[attr-defined]
