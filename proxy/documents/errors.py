"""Why a document cannot be served, in the document service's own terms.

Nothing here is an HTTP status: ``proxy.http.errors`` holds the one table that turns each of
these into the Download Document API's code and message for the endpoint that asked. The
message of an error is for the log, never for the client.
"""

from __future__ import annotations


class DocumentError(Exception):
    """A document that cannot be served.

    ``document_id`` is set when the request named many documents (an archive): the answer
    then says which one was refused.
    """

    document_id: str | None = None


class DocumentNotFound(DocumentError):
    """No such row, a deleted one, another tenant's, a refused path or no object in the store."""


class NoFilePath(DocumentError):
    """The row names no file (a document known only by its URL)."""


class StoreFailed(DocumentError):
    """The store failed: unreachable, refused, timed out, or an object that ended early."""


class CatalogFailed(DocumentError):
    """The catalog database failed or refused the look-up."""


class ArchiveTooLarge(DocumentError):
    """An archive over one of its limits (documents, bytes, link length). Unlike the others,
    the message is for the client: it says which limit."""
