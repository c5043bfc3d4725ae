"""Protocol name -> backend class, looked up (like fsspec's registry), imported lazily.

Adding a store is one module in this package and one line here.
"""

from __future__ import annotations

import importlib

from backends.base import StorageBackend

_REGISTRY: dict[str, str] = {
    "file": "backends.local:LocalBackend",
    "s3": "backends.s3:S3Backend",
    "gcs": "backends.gcs:GCSBackend",
    "az": "backends.azure:AzureBackend",
    "memory": "backends.memory:MemoryBackend",
}


def known_protocols() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def backend_class(protocol: str) -> type[StorageBackend]:
    """The class registered for ``protocol``; KeyError names the unknown protocol."""
    module_name, _, class_name = _REGISTRY[protocol].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)
