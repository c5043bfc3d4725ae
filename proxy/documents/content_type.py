"""Which MIME type a document is served as, and which extension its filename should carry."""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import logging
import mimetypes
import posixpath
import re
import sys
from types import ModuleType

OCTET_STREAM = "application/octet-stream"
# RFC 9110 type "/" subtype, both tokens (no parameters: they are dropped).
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")

# The OS's /etc/mime.types differs between machines and Python's own table lacks some office
# types, so the types the Download Document API names are registered here, whatever the host.
_KNOWN_TYPES = {
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".doc": "application/msword",
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".json": "application/json",
    ".zip": "application/zip",
}
# The extension to add for a type, where mimetypes would pick an odd one (".jpe" for JPEG).
_PREFERRED_EXTENSION = {
    "image/jpeg": ".jpg",
    "text/plain": ".txt",
    "application/pdf": ".pdf",
}

# The file name python-magic falls back to on Linux (after asking ldconfig).
_LIBMAGIC_SONAME = "libmagic.so.1" if sys.platform == "linux" else None

logger = logging.getLogger("docproxy")

# What libmagic says of formats that are containers of another: a DOCX is a ZIP to it.
_GENERIC_SNIFFS = {OCTET_STREAM, "application/zip", "text/plain", "application/x-empty"}


@functools.cache
def _mimetypes() -> ModuleType:
    """The standard library's tables with the API's types registered in them, at the first
    name the known types do not cover: reading the OS's tables costs 2 ms and 400 KiB, which
    a start whose documents all carry the usual extensions need not pay."""
    for ext, media_type in _KNOWN_TYPES.items():
        mimetypes.add_type(media_type, ext)
    return mimetypes


def type_from_name(name: str | None) -> str | None:
    if not name:
        return None
    ext = posixpath.splitext(name)[1].lower()
    if not ext:
        return None
    return _KNOWN_TYPES.get(ext) or _mimetypes().types_map.get(ext)


def type_from_column(value: str | None) -> str | None:
    """The catalog's type column holds a MIME type (``application/pdf``) or a kind (``PDF``)."""
    if not value:
        return None
    value = value.strip().lower()
    if "/" in value:
        # Only a well-formed type/subtype goes into the header; anything else (CR/LF,
        # spaces, extra slashes) is ignored as if the column were empty.
        media_type = value.split(";", 1)[0].strip()
        return media_type if _MEDIA_TYPE.fullmatch(media_type) else None
    return type_from_name(f"x.{value.lstrip('.')}")


@functools.cache
def _libmagic() -> tuple[ModuleType | None, str | None]:
    """python-magic, or why it cannot load the system's libmagic. Tried once: a failed import
    is not cached by Python, and each attempt would search for the library again."""
    try:
        import magic
    except (ImportError, OSError) as exc:
        return None, str(exc)
    return magic, None


@functools.cache
def libmagic_problem() -> str | None:
    """Why MIME sniffing is unavailable, or None when libmagic loads.

    Asked at start. Importing python-magic there would cost every start about 10 ms (it runs
    ldconfig to find the library) and a megabyte, for documents whose name and type disagree or
    say nothing, which many deployments never serve. So where the system's library opens by
    the name python-magic also tries, the import waits for the first sniff (which pays those
    10 ms once); elsewhere it is tried now, for its own reason."""
    if _LIBMAGIC_SONAME and importlib.util.find_spec("magic") is not None:
        try:
            ctypes.CDLL(_LIBMAGIC_SONAME)
        except OSError:
            pass
        else:
            return None
    return _libmagic()[1]


def sniff(head: bytes) -> str | None:
    """libmagic's verdict on the first bytes, or None when libmagic is unavailable."""
    if not head:
        return None
    magic, problem = _libmagic()
    if magic is None:
        if libmagic_problem() is None:  # the start found the library: this failure is news
            _warn_once(problem)
        return None
    try:
        found = magic.from_buffer(head, mime=True)
    except Exception:  # libmagic confused: sniffing is only a tie-breaker
        return None
    return found or None


@functools.cache
def _warn_once(problem: str | None) -> None:
    """The library opened at start, yet python-magic failed to load it: said once."""
    logger.warning("MIME sniffing is off: libmagic cannot be loaded (%s)", problem)


def choose_type(by_name: str | None, by_column: str | None, sniffed: str | None) -> str:
    """Extension, then type column; the first bytes settle a disagreement or an absence."""
    if by_name and by_column:
        if by_name == by_column:
            return by_name
        if sniffed in (by_name, by_column):
            return sniffed
        return by_name
    if by_name or by_column:
        return by_name or by_column or OCTET_STREAM
    if sniffed and sniffed not in ("application/x-empty",):
        return sniffed
    return OCTET_STREAM


@functools.lru_cache(maxsize=4096)
def declared_types(
    name: str | None, file_path: str | None, column: str | None
) -> tuple[str | None, str | None]:
    """The type by the document's name (else its path's) and by its type column. Cached: the
    same documents are served again and again, and these are string work on every download."""
    return type_from_name(name) or type_from_name(file_path), type_from_column(column)


def needs_sniff(by_name: str | None, by_column: str | None) -> bool:
    return (by_name is None and by_column is None) or (
        by_name is not None and by_column is not None and by_name != by_column
    )


def extension_for(content_type: str) -> str | None:
    if content_type in _PREFERRED_EXTENSION:
        return _PREFERRED_EXTENSION[content_type]
    for ext, known in _KNOWN_TYPES.items():
        if known == content_type:
            return ext
    return _mimetypes().guess_extension(content_type)
