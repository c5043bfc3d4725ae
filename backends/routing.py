"""Which configured backend owns a catalog file path, and under which key."""

from __future__ import annotations

from collections.abc import Mapping

from backends.base import InvalidKey, StorageBackend
from backends.keys import url_path_key


class StorageRouter:
    """Maps ``scheme://bucket/key`` to the backend configured for it, other paths to the default."""

    def __init__(self, backends: Mapping[str, StorageBackend], default: str) -> None:
        self.backends = dict(backends)
        self.default = self.backends[default]

    def locate(self, file_path: str) -> tuple[StorageBackend, str]:
        """The backend and key for a catalog path; ``InvalidKey`` when none may serve it.

        A full URL is split by hand, not by ``urlsplit``: an object key may hold ``?`` and
        ``#``, which are no query or fragment here (``url_path_key`` says when it is decoded).
        """
        scheme, sep, rest = file_path.partition("://")
        if not sep:
            return self.default, self.default.key_for(file_path)
        scheme = scheme.lower()
        netloc, _, path = rest.partition("/")
        for backend in self.backends.values():
            if scheme in backend.schemes and backend.owns(netloc):
                key = url_path_key(path)
                try:
                    return backend, backend.key_for_url(netloc, "/" + key)
                except InvalidKey as exc:
                    if key != path:
                        raise InvalidKey(f"{exc} (the URL path, read as percent-encoded)") from exc
                    raise
        raise InvalidKey(f"no configured backend serves {scheme}://{netloc}")

    async def open(self) -> None:
        for backend in self.backends.values():
            await backend.open()

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.close()
