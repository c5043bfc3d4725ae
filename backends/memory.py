"""fsspec's in-process memory filesystem: a store for tests and demos, empty at start.

Objects live in this process only (``fsspec.filesystem("memory")``), under ``/{bucket}/``.
It cannot presign, so the proxy hands out its own signed links.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from backends.base import PresignRequest
from backends.fsspec_common import FsspecBackend, StoreOptions, parse_store_options
from proxy.config.section import Section


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    store: StoreOptions


class MemoryBackend(FsspecBackend):
    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    options: MemoryOptions

    @classmethod
    def parse_options(cls, section: Section) -> MemoryOptions:
        return MemoryOptions(store=parse_store_options(section))

    async def open(self) -> None:
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
        from fsspec.implementations.memory import MemoryFileSystem

        self.fs = AsyncFileSystemWrapper(MemoryFileSystem(), asynchronous=True)

    async def close(self) -> None:
        self.fs = None

    async def probe(self) -> None:
        return None  # in this process: there while the process is

    def _path(self, key: str) -> str:
        return f"/{super()._path(key)}"

    async def presign(self, request: PresignRequest) -> str | None:
        return None
