"""Files the tests make themselves (small but valid headers) and direct writes to the test db."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pdf_bytes(padding: int = 0) -> bytes:
    body = (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
    )
    return (
        body + b"% " + os.urandom(padding).hex().encode() + b"\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    )


def docx_bytes(padding: int = 0) -> bytes:
    """A minimal Word document: the three parts a reader needs, stored in a real ZIP."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>',
        )
        archive.writestr(
            "_rels/.rels",
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Target="word/document.xml" Type="http://schemas.'
            'openxmlformats.org/officeDocument/2006/relationships/officeDocument"/>'
            "</Relationships>",
        )
        archive.writestr(
            "word/document.xml",
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            "<w:body><w:p><w:r><w:t>docproxy test</w:t></w:r></w:p></w:body></w:document>",
        )
        if padding:
            archive.writestr("word/media/padding.bin", os.urandom(padding), zipfile.ZIP_STORED)
    return buffer.getvalue()


def txt_bytes(padding: int = 0) -> bytes:
    return ("Plain text, with ünïcödé.\n" + "line of text\n" * (padding // 13)).encode()


def png_bytes(padding: int = 0) -> bytes:
    """A valid 1x1 RGB PNG, with an ancillary chunk to make it bigger when asked."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    extra = chunk(b"tEXt", b"pad\x00" + os.urandom(padding).hex().encode()) if padding else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + extra
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(padding: int = 0) -> bytes:
    """SOI, a JFIF APP0 segment, a comment segment of random bytes, EOI."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    comment = os.urandom(min(padding, 65000)) if padding else b"docproxy"
    com = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return b"\xff\xd8" + app0 + com + b"\xff\xd9"


def gif_bytes(padding: int = 0) -> bytes:
    """A 1x1 GIF89a with a comment extension of random bytes."""
    image = (
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
        b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00"
    )
    comment = b""
    remaining = padding
    while remaining > 0:
        block = os.urandom(min(255, remaining))
        comment += bytes([len(block)]) + block
        remaining -= len(block)
    extension = b"\x21\xfe" + comment + b"\x00" if padding else b""
    return image[: 13 + 6] + extension + image[13 + 6 :] + b"\x3b"


@dataclass(frozen=True)
class Sample:
    """One test file: its name, bytes, and the Content-Type docproxy must send for it."""

    name: str
    data: bytes
    content_type: str


def api_file_types(padding: int = 3000) -> list[Sample]:
    """The types the Download Document API supports: PDF, DOCX, TXT, PNG, JPG, JPEG, GIF."""
    return [
        Sample("report.pdf", pdf_bytes(padding), "application/pdf"),
        Sample("letter.docx", docx_bytes(padding), DOCX_TYPE),
        Sample("notes.txt", txt_bytes(padding), "text/plain"),
        Sample("image.png", png_bytes(padding), "image/png"),
        Sample("photo.jpg", jpeg_bytes(padding), "image/jpeg"),
        Sample("photo2.jpeg", jpeg_bytes(padding), "image/jpeg"),
        Sample("anim.gif", gif_bytes(padding), "image/gif"),
    ]


def insert_document(
    db_path: Path,
    document_id: str,
    *,
    file_path: str | None = None,
    url: str | None = None,
    name: str | None = None,
    type_: str | None = None,
    group: str | None = None,
    deleted_at: str | None = None,
    size: int | None = None,
    checksum: str | None = None,
) -> str:
    """Write a row straight into the embedded catalog (the tests may; docproxy never does)."""
    with sqlite3.connect(db_path) as connection:
        connection.execute(
            "INSERT INTO documents (id, file_path, document_url, name, type, group_name,"
            " deleted_at, size, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (document_id, file_path, url, name, type_, group, deleted_at, size, checksum),
        )
    connection.close()
    return document_id


def store_file(root: Path, key: str, data: bytes) -> Path:
    """Put bytes at ``root/key`` as if an operator had copied them into the local store."""
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
