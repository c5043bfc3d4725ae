"""Why a document cannot be served, in the document service's own terms.

Nothing here is an HTTP status: ``proxy.http.errors`` holds the one table that turns each of
these into the Download Document API's code and message for the endpoint that asked. The
message of an error is for the log, never for the client.
"""

from __future__ import annotations


class DocumentError(Exception):
    """A document that cannot be served."""


class DocumentNotFound(DocumentError):
    """No such row, a deleted one, another tenant's, a refused path or no object in the store."""


class NoFilePath(DocumentError):
    """The row names no file (a document known only by its URL)."""


class StoreFailed(DocumentError):
    """The store failed: unreachable, refused, timed out, or an object that ended early."""


class CatalogFailed(DocumentError):
    """The catalog database failed or refused the look-up."""
