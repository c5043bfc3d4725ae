"""A catalog row as docproxy reads it: the document's fields, whatever the columns are called."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.catalog.settings import ColumnMap

FIELDS = (
    "id",
    "file_path",
    "url",
    "name",
    "type",
    "group",
    "size",
    "checksum",
    "updated_at",
    "deleted",
)


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    file_path: str | None
    url: str | None = None
    name: str | None = None
    type: str | None = None
    group: str | None = None
    size: int | None = None
    checksum: str | None = None
    updated_at: str | None = None
    deleted: bool = False


def document_from_row(row: Mapping[str, Any], columns: ColumnMap, aliased: bool) -> Document:
    def value(field: str) -> Any:
        column = getattr(columns, field)
        if column is None:
            return None
        return row[f"doc_{field}"] if aliased else row[column]

    size = value("size")
    updated = value("updated_at")
    return Document(
        id=str(value("id")),
        file_path=_text(value("file_path")),
        url=_text(value("url")),
        name=_text(value("name")),
        type=_text(value("type")),
        group=_text(value("group")),
        size=int(size) if size is not None else None,
        checksum=_text(value("checksum")),
        updated_at=str(updated) if updated is not None else None,
        deleted=_is_deleted(value("deleted")),
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    return text if text.strip() else None


def _is_deleted(marker: Any) -> bool:
    """A soft-delete marker counts when it is a set timestamp or a true flag."""
    if marker is None:
        return False
    if isinstance(marker, bool | int):
        return bool(marker)
    if isinstance(marker, str):
        return marker.strip().lower() not in ("", "0", "false", "no", "n", "f")
    return True
