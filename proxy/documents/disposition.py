"""``Content-Disposition`` that no filename can break (RFC 6266, RFC 8187)."""

from __future__ import annotations

import functools
import re
import unicodedata
from urllib.parse import quote

from proxy.common.filenames import clean_filename
from proxy.documents.content_type import OCTET_STREAM, extension_for, type_from_name

ATTACHMENT, INLINE = "attachment", "inline"
DISPOSITIONS = (ATTACHMENT, INLINE)
# RFC 8187 attr-char: what may stand unescaped in filename*.
_ATTR_CHARS = "!#$&+-.^_`|~"
_UNSAFE_IN_QUOTED = re.compile(r'[^\x20-\x7e]|["\\]')


def with_extension(name: str, content_type: str) -> str:
    """Add the type's extension when the name lacks one (``report`` -> ``report.pdf``).

    A dot alone does not make an extension: ``John.Doe CV`` or ``v1.2`` end in no known type,
    so they get one too. ``application/octet-stream`` adds nothing (``.bin`` says nothing).
    """
    if type_from_name(name) is not None or content_type == OCTET_STREAM:
        return name
    ext = extension_for(content_type)
    return f"{name}{ext}" if ext else name


def ascii_fallback(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _UNSAFE_IN_QUOTED.sub("_", stripped)


def content_disposition(name: str, disposition: str = "attachment") -> str:
    """``attachment; filename="..."`` plus ``filename*`` whenever the plain form lost anything,
    or holds a ``%``: browsers percent-decode a plain ``filename`` (RFC 6266 appendix D), so
    ``%41`` would be saved as ``A``, while ``filename*`` is taken first and read exactly."""
    name = clean_filename(name)
    fallback = ascii_fallback(name)
    header = f'{disposition}; filename="{fallback}"'
    if fallback != name or "%" in fallback:
        header += f"; filename*=UTF-8''{quote(name, safe=_ATTR_CHARS)}"
    return header


@functools.lru_cache(maxsize=4096)
def attachment(name: str, content_type: str) -> tuple[str, str]:
    """The filename a download is saved as (cleaned, with the type's extension) and its
    ``Content-Disposition``. Cached: hot documents repeat the same name and type."""
    filename = with_extension(clean_filename(name), content_type)
    return filename, content_disposition(filename)
