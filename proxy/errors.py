"""The errors endpoints raise; ``envelope`` turns each into the seed's response.

Each class carries the status and message the seed defines, so an endpoint says *what* went
wrong and never builds a response for it.
"""

from __future__ import annotations

from collections.abc import Mapping


class DocproxyError(Exception):
    status_code: int = 500
    message: str = "Internal server error"

    def __init__(self, message: str | None = None, *, headers: Mapping[str, str] | None = None):
        super().__init__(message or self.message)
        if message is not None:
            self.message = message
        self.headers = dict(headers or {})


class Unauthorized(DocproxyError):
    status_code = 403
    message = "UNAUTHORIZED"


class DocumentIdRequired(DocproxyError):
    status_code = 435
    message = "Document ID is required"


class InvalidRequest(DocproxyError):
    """A request the seed's 435 covers but whose fault is not the id itself (bad JSON, type...)."""

    status_code = 435
    message = "Invalid request"


class DocumentHasNoFilePath(DocproxyError):
    status_code = 435
    message = "Document has no file path"


class DocumentNotFound(DocproxyError):
    status_code = 437
    message = "Document not found"


class PresignFailed(DocproxyError):
    status_code = 500
    message = "Failed to generate download URL"


class DownloadFailed(DocproxyError):
    status_code = 500
    message = "Failed to download document"


class TokenFailed(DocproxyError):
    status_code = 500
    message = "Failed to generate access token"


class RouteNotFound(DocproxyError):
    status_code = 404
    message = "Route not found"


class MethodNotAllowed(DocproxyError):
    status_code = 405
    message = "Method not allowed"


class RangeNotSatisfiable(DocproxyError):
    status_code = 416
    message = "Requested range not satisfiable"


class PreconditionFailed(DocproxyError):
    status_code = 412
    message = "Precondition failed"
