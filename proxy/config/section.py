"""Typed reading of one mapping from the config file, for every owner of a section.

Every problem is recorded with its dotted key path (``storage.backends.s3.bucket: required``)
instead of raised, so that one run of ``check-config`` names every bad key at once.

A reader returns None for a key the file leaves out (or gives a refused value), unless the
caller names a default. Defaults live on the fields of the frozen dataclass a section becomes:
``given`` passes on only what the file gave, so each default is written once, on its field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import UnionType
from typing import Any

from proxy.common.sizes import parse_size


class Section:
    """One mapping of the config, with the errors list it reports into."""

    def __init__(self, raw: object, path: str, errors: list[str]) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            errors.append(f"{path}: must be a mapping")
            raw = {}
        self._raw: Mapping[str, Any] = raw
        self._seen: set[str] = set()
        self.path = path
        self.errors = errors

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self.errors.append(f"{self.key_path(key)}: {message}")

    def has(self, key: str) -> bool:
        return self._raw.get(key) is not None

    def names(self) -> Iterator[str]:
        return iter(self._raw)

    def _get(self, key: str) -> Any:
        self._seen.add(key)
        return self._raw.get(key)

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        choices: tuple[str, ...] | None = None,
    ) -> str | None:
        value = self._get(key)
        if value is None:
            if required:
                self.error(key, "required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.error(key, f"must be a string, not {type(value).__name__}")
            return default
        value = str(value)
        if required and not value.strip():
            self.error(key, "must not be empty")
            return default
        if choices is not None and value not in choices:
            self.error(key, f"must be one of {', '.join(choices)} (got {value!r})")
            return default
        return value

    def integer(
        self, key: str, default: int | None = None, *, minimum: int | None = None
    ) -> int | None:
        value = self._numeric(key, int, "an integer", minimum)
        return default if value is None else int(value)

    def number(
        self, key: str, default: float | None = None, *, minimum: float | None = None
    ) -> float | None:
        value = self._numeric(key, int | float, "a number", minimum)
        return default if value is None else float(value)

    def duration(self, key: str) -> float | None:
        """A number of seconds, more than 0."""
        value = self.number(key, minimum=0)
        if value == 0:
            self.error(key, "must be more than 0")
            return None
        return value

    def _numeric(
        self, key: str, kind: type | UnionType, what: str, minimum: float | None
    ) -> float | None:
        """The value if it is a ``kind`` (never a bool) of at least ``minimum``, else None."""
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, kind):
            self.error(key, f"must be {what}, not {type(value).__name__}")
            return None
        if minimum is not None and value < minimum:
            self.error(key, f"must be at least {minimum} (got {value})")
            return None
        return value

    def size(self, key: str, default: int | None = None, *, minimum: int = 1) -> int | None:
        """A byte count: an integer or a string such as ``1MiB``, ``512 KiB``, ``64k``."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            parsed: int | None = value
        else:
            parsed = parse_size(value) if isinstance(value, str) else None
            if parsed is None:
                self.error(key, f"must be a byte size such as 1048576 or '1MiB' (got {value!r})")
                return default
        if parsed < minimum:
            self.error(key, f"must be at least {minimum} bytes (got {parsed})")
            return default
        return parsed

    def boolean(self, key: str, default: bool | None = None) -> bool | None:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(key, f"must be true or false, not {value!r}")
            return default
        return value

    def section(self, key: str) -> Section:
        return Section(self._get(key), self.key_path(key), self.errors)

    def sequence(self, key: str) -> list[Any]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(key, "must be a list")
            return []
        return value

    def raw(self, key: str) -> Any:
        """The unparsed value, for the rare key whose shape the caller checks itself."""
        return self._get(key)

    def finish(self) -> None:
        """Report keys that nothing read: a typo must not be silently ignored."""
        for key in self._raw:
            if key not in self._seen:
                self.error(str(key), "unknown key")


def given(**values: Any) -> dict[str, Any]:
    """The keyword arguments the file gave (None: left out or refused), for a dataclass whose
    fields hold the defaults."""
    return {name: value for name, value in values.items() if value is not None}
