"""Which configured backend owns a catalog file path, and under which key."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from backends.base import InvalidKey, StorageBackend


class StorageRouter:
    """Maps ``scheme://bucket/key`` to the backend configured for it, other paths to the default."""

    def __init__(self, backends: Mapping[str, StorageBackend], default: str) -> None:
        self.backends = dict(backends)
        self.default = self.backends[default]

    def locate(self, file_path: str) -> tuple[StorageBackend, str]:
        """The backend and key for a catalog path; ``InvalidKey`` when none may serve it."""
        if "://" not in file_path:
            return self.default, self.default.key_for(file_path)
        parts = urlsplit(file_path)
        scheme = parts.scheme.lower()
        for backend in self.backends.values():
            if scheme in backend.schemes and backend.owns(parts.netloc):
                return backend, backend.key_for_url(parts.netloc, unquote(parts.path))
        raise InvalidKey(f"no configured backend serves {scheme}://{parts.netloc}")

    async def open(self) -> None:
        for backend in self.backends.values():
            await backend.open()

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()
