"""The HTTP endpoints: parse, call the service, answer. Errors are raised, and ``Handler``
answers them from the one table in ``proxy.http.errors``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from proxy.auth.archive_links import ArchiveLinkSigner
from proxy.auth.binding import FINGERPRINT_HEADER, fingerprint_matches
from proxy.auth.errors import Unauthorized
from proxy.auth.issuers import IssuerTokens
from proxy.auth.links import LimitedLink, LinkSigner
from proxy.auth.tokens import Caller, TokenAuthority, TokenRequest
from proxy.common.caches import BoundedCache
from proxy.documents.archive import ArchiveService
from proxy.documents.disposition import ATTACHMENT, content_disposition
from proxy.documents.service import DocumentService, ResolvedDocument
from proxy.documents.stats import DownloadStats
from proxy.http import audit
from proxy.http.accel import AccelRedirect
from proxy.http.conditional import Validators, select_response
from proxy.http.envelope import error_response, ok
from proxy.http.errors import (
    ANSWERED,
    Action,
    BearerRefused,
    DocumentIdRequired,
    InvalidRequest,
    TooManyFailedLogins,
    TooManyRequests,
    answer_for,
)
from proxy.http.openapi import openapi_json
from proxy.http.requests import (
    INVALID_TOKEN,
    NO_TOKEN,
    archive_filename,
    bearer_token,
    disposition_from,
    document_id_from,
    document_ids_from,
    json_object,
    optional_integer,
    optional_string,
    required_string,
)
from proxy.http.streaming import UNKNOWN_IN_FLIGHT, DownloadResponse
from proxy.limits.logins import FailedLogins
from proxy.metrics import instruments
from proxy.state.errors import StateFailed
from proxy.state.limits import CallerBudget
from proxy.state.store import StateStore
from proxy.state.watch import WatchedRevocations

# A list of many ids may be longer than the API's other bodies.
ARCHIVE_BODY_BYTES = 1024 * 1024
# The body length given to a stream whose length is not known (deflated archives): never reached.
UNKNOWN_LENGTH = 1 << 62

logger = logging.getLogger("docproxy")

# The most uses a limited link may allow (its count is a ten-digit decimal in the link).
MAX_DOWNLOADS = 1_000_000_000
# Base URLs remembered by ``Endpoints.base_url``: one per Host a client names, which is the
# client's to choose.
BASE_URLS_KEPT = 256
TOKEN_HEADERS = {"cache-control": "no-store", "pragma": "no-cache"}


def remote(request: Request) -> str | None:
    client = request.scope.get("client")
    return client[0] if client else None


def _with_range(trail: dict[str, Any] | None, content_range: str | None) -> dict[str, Any] | None:
    if trail is not None:
        trail["range"] = content_range
    return trail


class Handler:
    """An endpoint ``request -> response`` served as a plain ASGI app, which answers the errors
    of the table (``proxy.http.errors.ANSWERS``) in the words of its ``action``.

    Given a function, Starlette's ``Route`` would wrap it in an exception-handling layer of its
    own (a closure and a wrapped ``send`` per request); the one ``try`` here does that work.
    """

    def __init__(
        self, endpoint: Callable[[Request], Awaitable[Response]], action: Action | None = None
    ) -> None:
        self.endpoint = endpoint
        self.action = action

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self.endpoint(Request(scope, receive))
        except ANSWERED as exc:
            response = error_response(exc, self.action)
        await response(scope, receive, send)


@dataclass(eq=False)
class Endpoints:
    tokens: TokenAuthority
    links: LinkSigner
    documents: DocumentService
    stats: DownloadStats
    cache_control: str
    public_url: str | None
    revocations: WatchedRevocations
    state: StateStore
    downloads: CallerBudget  # limits.downloads_per_minute, per (client id, subject)
    presigns: CallerBudget  # limits.presigns_per_minute
    issuers: IssuerTokens | None = None  # auth.issuers: the application's identity providers
    accel: AccelRedirect | None = None
    sendfile: bool = False  # download.sendfile: local bodies offered to the server as files
    in_flight: int = UNKNOWN_IN_FLIGHT  # what the kernel may hold in flight (sendfile_tail)
    archives: ArchiveService | None = None
    archive_links: ArchiveLinkSigner | None = None
    failed_logins: FailedLogins = field(default_factory=lambda: FailedLogins(None))
    # Building a base URL parses the Host header into a URL: remembered per what it is made of.
    _base_urls: BoundedCache[tuple[object, ...], str] = field(
        default_factory=lambda: BoundedCache(BASE_URLS_KEPT), init=False, repr=False
    )

    def routes(self) -> list[Route]:
        # Downloads first: the router tries routes in order, and each miss costs a regex match.
        # "/download/" (empty id) is a download too: its id fails the check with the API's 435.
        get = ["GET", "HEAD"]
        download, presign, token = Action.DOWNLOAD, Action.PRESIGN, Action.TOKEN
        return [
            Route("/download/{document_id:path}", Handler(self.download, download), methods=get),
            Route("/links/{document_id:path}", Handler(self.download_link, download), methods=get),
            Route("/download", Handler(self.presign, presign), methods=["POST"]),
            Route("/download/zip", Handler(self.archive_link, presign), methods=["POST"]),
            Route("/archives/{filename}", Handler(self.archive, download), methods=get),
            Route("/download", Handler(self.missing_id, download), methods=get),
            Route(
                "/generate-client-auth-token", Handler(self.generate_token, token), methods=["POST"]
            ),
            Route("/openapi.json", Handler(self.openapi), methods=["GET"]),
        ]

    async def caller(self, request: Request) -> Caller:
        try:
            token = bearer_token(request.headers.get("authorization"))
            provider = self.issuers.provider_of(token) if self.issuers else None
            if provider is not None:
                caller = await provider.verify(token)
            else:
                caller = self.tokens.verify(token)
        except (Unauthorized, BearerRefused) as exc:
            presented = not isinstance(exc, BearerRefused) or exc.headers != NO_TOKEN
            if (metered := instruments.active()) is not None:
                reason = "invalid_token" if presented else "no_token"
                metered.child(metered.tokens, "refused", reason).inc()
            if isinstance(exc, BearerRefused):
                raise
            raise BearerRefused(headers=INVALID_TOKEN) from exc
        if self.revocations.current.refuses_token(
            caller.client_id, caller.token_id, caller.issued_at
        ):
            raise BearerRefused(headers=INVALID_TOKEN)
        if self.tokens.config.bind_fingerprint and not fingerprint_matches(
            caller.fingerprint, request.headers.get(FINGERPRINT_HEADER)
        ):
            raise BearerRefused(headers=INVALID_TOKEN)  # a token used off its device
        return caller

    async def spend(self, budget: CallerBudget, caller: Caller) -> None:
        """429 with Retry-After when the caller has spent its budget for this minute."""
        try:
            retry_after = await budget.spend(caller.client_id, caller.subject)
        except StateFailed as exc:
            logger.error("shared state failed counting %s: %s", budget.name, exc)
            raise
        if retry_after is not None:
            raise TooManyRequests(headers={"retry-after": str(retry_after)})

    def check_document(self, document_id: str) -> str:
        """The id, unless an operator revoked the document (403 on every endpoint)."""
        if self.revocations.current.refuses_document(document_id):
            raise Unauthorized()
        return document_id

    async def generate_token(self, request: Request) -> Response:
        body = await json_object(request)
        if body is None:
            raise InvalidRequest("client_id is required")
        user = body.get("user")
        if user is None:
            user = {}
        if not isinstance(user, dict):
            raise InvalidRequest("user must be a JSON object")
        token_request = TokenRequest(
            client_id=required_string(body, "client_id"),
            client_secret=required_string(body, "client_secret"),
            fingerprint=optional_string(body, "fingerprint"),
            first_name=optional_string(user, "first_name", "user.first_name"),
            last_name=optional_string(user, "last_name", "user.last_name"),
            email=optional_string(user, "email", "user.email"),
            group_name=optional_string(user, "group_name", "user.group_name"),
        )
        # Checked before the secret, so that a blocked guess learns nothing from the answer.
        address = remote(request)
        wait = await self.failed_logins.retry_after(token_request.client_id, address)
        if wait is not None:
            if (metered := instruments.active()) is not None:
                metered.child(metered.tokens, "refused", "too_many_failed_logins").inc()
            if audit.enabled():
                fields = {"client": token_request.client_id, "remote": address}
                audit.record("token.refused", "token refused", {**fields, "outcome": "refused 429"})
            raise TooManyFailedLogins(headers={"retry-after": str(wait)})
        token_id = uuid.uuid4().hex
        try:
            token = self.tokens.issue(token_request, token_id=token_id)
        except Unauthorized:
            await self.failed_logins.failed(token_request.client_id, address)
            if (metered := instruments.active()) is not None:
                metered.child(metered.tokens, "refused", "client_credentials").inc()
            if audit.enabled():
                fields = {"client": token_request.client_id, "remote": address}
                audit.record("token.refused", "token refused", {**fields, "outcome": "refused"})
            raise
        if (metered := instruments.active()) is not None:
            metered.child(metered.tokens, "issued", "client_credentials").inc()
        if audit.enabled():
            user = token_request.email or token_request.client_id
            fields = {
                "client": token_request.client_id,
                "subject": user,
                "group": token_request.group_name,
                "token_id": token_id,
                "remote": address,
                "outcome": "issued",
            }
            audit.record("token.issued", "token issued", fields)
        # RFC 6749, section 5.1: a response carrying a token is never stored by a cache.
        return ok(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.tokens.config.token_ttl,
            },
            headers=TOKEN_HEADERS,
        )

    async def presign(self, request: Request) -> Response:
        caller = await self.caller(request)  # the token is checked before anything else
        if self.presigns.per_minute is not None:
            await self.spend(self.presigns, caller)
        body = await json_object(request)
        body = body or {}
        document_id = self.check_document(document_id_from(body.get("document_id")))
        expires_in = optional_integer(body, "expires_in", 1, self.links.ttl)
        max_uses = optional_integer(body, "max_downloads", 1, MAX_DOWNLOADS)
        base_url = self.public_url or self.base_url(request)
        limits = {
            "expires_in": expires_in,
            "max_uses": max_uses,
            "disposition": disposition_from(body.get("disposition")),
        }
        if not audit.enabled():
            url, _ = await self.documents.presign(document_id, caller, base_url, **limits)
            return ok({"download_url": url})
        fields = audit.caller_fields(caller, document_id, remote(request))
        try:
            url, backend = await self.documents.presign(document_id, caller, base_url, **limits)
        except ANSWERED as exc:
            fields["outcome"] = f"refused {answer_for(exc, Action.PRESIGN).status}"
            audit.record("presign", "presign refused", fields)
            raise
        fields["backend"] = backend  # the request's own dict: filled, not copied
        fields["outcome"] = "issued"
        audit.record("presign", "presigned URL", fields)
        return ok({"download_url": url})

    async def archive_link(self, request: Request) -> Response:
        caller = await self.caller(request)  # the token is checked before anything else
        if self.presigns.per_minute is not None:
            await self.spend(self.presigns, caller)
        assert self.archives is not None
        body = await json_object(request, ARCHIVE_BODY_BYTES) or {}
        document_ids = [self.check_document(i) for i in document_ids_from(body.get("document_ids"))]
        filename = archive_filename(body.get("filename"))
        base_url = self.public_url or self.base_url(request)
        url = await self.archives.link(document_ids, filename, caller, base_url)
        return ok({"download_url": url})

    async def archive(self, request: Request) -> Response:
        """An archive's link: every document checked again, then the ZIP streamed. Range is
        ignored (Accept-Ranges: none): the archive is made anew on every GET."""
        assert self.archives is not None and self.archive_links is not None
        filename = request.path_params["filename"]
        grant = self.archive_links.verify(filename, request.query_params.multi_items())
        for document_id in grant.document_ids:
            self.check_document(document_id)  # revoked after the link was made
        archive = await self.archives.open(grant)
        headers = {
            "content-type": "application/zip",
            "content-disposition": content_disposition(filename),
            "cache-control": self.cache_control,
            "x-content-type-options": "nosniff",
            "accept-ranges": "none",
        }
        if archive.length is not None:
            headers["content-length"] = str(archive.length)
        return DownloadResponse(
            self.archives.chunks(archive),
            status_code=200,
            headers=headers,
            length=archive.length if archive.length is not None else UNKNOWN_LENGTH,
            stats=self.stats,
            label=f"archive {filename!r} of {len(archive.entries)} documents",
            backend="archive",
        )

    def base_url(self, request: Request) -> str:
        """Starlette's ``request.base_url`` as text, remembered for what it is made of."""
        scope = request.scope
        server = scope.get("server")
        key = (
            scope.get("scheme"),
            tuple(server) if server is not None else None,  # ASGI allows a list here
            scope.get("app_root_path"),
            scope.get("root_path"),
            request.headers.get("host"),
        )
        url = self._base_urls.get(key)
        if url is None:
            url = str(request.base_url)
            self._base_urls.put(key, url)
        return url

    async def missing_id(self, request: Request) -> Response:
        await self.caller(request)
        raise DocumentIdRequired()

    async def download(self, request: Request) -> Response:
        caller = await self.caller(request)
        if self.downloads.per_minute is not None:
            await self.spend(self.downloads, caller)
        document_id = self.check_document(document_id_from(request.path_params["document_id"]))
        disposition = disposition_from(request.query_params.get("disposition"))
        return await self.resolve_and_send(request, document_id, caller, None, disposition)

    async def download_link(self, request: Request) -> Response:
        document_id = request.path_params["document_id"]
        link = self.links.verify_document_link(document_id, request.query_params.multi_items())
        limit = link.limit
        document_id = self.check_document(document_id_from(document_id))
        disposition = link.params.get("disposition", ATTACHMENT)  # signed: one we wrote
        return await self.resolve_and_send(request, document_id, None, limit, disposition)

    async def count_use(
        self, request: Request, resolved: ResolvedDocument, limit: LimitedLink
    ) -> None:
        """A GET whose body starts at byte 0 is a use, counted atomically in the shared state;
        past the limit it is refused. A range starting later resumes a use: served, not
        counted, while the link has been used and not past its limit (HEAD and 304 alike,
        without the first condition)."""
        selection = select_response(
            request.method, request.headers, Validators.of(resolved.info), resolved.info.size
        )
        key = f"link:{limit.link_id}"
        sends_body = request.method == "GET" and selection.status != 304
        try:
            if sends_body and (selection.byte_range is None or selection.byte_range.start == 0):
                uses = await self.state.increment(key, limit.expires)
            else:
                uses = await self.state.count(key)
        except StateFailed as exc:
            logger.error("shared state failed counting a limited link's use: %s", exc)
            raise
        if sends_body and uses == 0:
            raise Unauthorized()  # a resume of nothing
        if uses > limit.max_uses:
            raise Unauthorized()

    async def resolve_and_send(
        self,
        request: Request,
        document_id: str,
        caller: Caller | None,
        limit: LimitedLink | None = None,
        disposition: str = ATTACHMENT,
    ) -> Response:
        """Resolve, count a limited link's use, send; audited when the audit log is on."""
        if not audit.enabled():
            resolved = await self.documents.resolve_document(document_id, caller, disposition)
            if limit is not None:
                await self.count_use(request, resolved, limit)
            return self.send(request, resolved)
        fields = audit.caller_fields(caller, document_id, remote(request))
        try:
            resolved = await self.documents.resolve_document(document_id, caller, disposition)
            if limit is not None:
                await self.count_use(request, resolved, limit)
        except ANSWERED as exc:
            fields["outcome"] = f"refused {answer_for(exc, Action.DOWNLOAD).status}"
            audit.record("download", "download refused", fields)
            raise
        fields["backend"] = resolved.backend.name  # the request's own dict: filled, not copied
        return self.send(request, resolved, fields)

    def send(
        self, request: Request, resolved: ResolvedDocument, trail: dict[str, Any] | None = None
    ) -> Response:
        """The whole object (200), one range of it (206) or nothing new (304); HEAD alike."""
        size = resolved.info.size
        validators = Validators.of(resolved.info)
        selection = select_response(request.method, request.headers, validators, size)
        if selection.status == 304:
            headers = {"cache-control": self.cache_control, **validators.not_modified_headers()}
            return Response(status_code=304, headers=headers)
        headers = {
            "content-type": resolved.content_type,
            "content-disposition": resolved.content_disposition,
            "content-length": str(size),
            "cache-control": self.cache_control,
            "x-content-type-options": "nosniff",
            "accept-ranges": "bytes",
            **validators.headers(),
        }
        if self.accel is not None and self.accel.serves(resolved.backend.name):
            return self.accel.response(resolved.key, headers)
        start, stop = 0, size
        if selection.byte_range is not None:
            start, stop = selection.byte_range.start, selection.byte_range.stop
            headers["content-range"] = selection.byte_range.content_range()
            headers["content-length"] = str(selection.byte_range.length)
        read = self.documents.stream(resolved, start, stop)
        return DownloadResponse(
            read,
            status_code=selection.status,
            headers=headers,
            length=stop - start,
            stats=self.stats,
            label=repr(resolved.document.id),
            trail=_with_range(trail, headers.get("content-range")),
            backend=resolved.backend.name,
            files=read if self.sendfile else None,
            in_flight=self.in_flight,
        )

    async def openapi(self, request: Request) -> Response:
        return Response(openapi_json(), media_type="application/json")
