"""Amazon S3 and S3-compatible stores (MinIO, Ceph, moto...) through s3fs.

Reads go through s3fs's aiobotocore client: one ranged GET per ``stream_range``, its body read
in bounded chunks. A big range (``fast_read_min_size``) is instead fetched with a presigned URL
straight into chunk buffers (``backends.ranged_get``), which spares the copies the SDK makes of
every byte; the SDK still answers whatever that plain GET does not expect. Presigning is
botocore's offline SigV4 query signing with clients made once in ``open``: no round trip per
URL.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Hashable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import anyio.to_thread

from backends.base import ObjectChanged, ObjectInfo, PresignRequest, StorageError
from backends.fsspec_common import (
    FsspecBackend,
    StoreOptions,
    parse_store_options,
    read_ahead,
    secret_from_env,
)
from backends.ranged_get import Unexpected, ranged_get
from proxy.config.section import Section

logger = logging.getLogger("docproxy")

# Connections to the store, shared by all downloads: a streaming download holds one for as long
# as its client reads. botocore's default of 10 made an eleventh concurrent download wait for
# a free connection (and time out behind slow readers).
DEFAULT_MAX_CONNECTIONS = 256
# Ranges at least this big are read over a connection of their own, straight into chunks:
# the connection set-up is nothing next to 8 MiB, and small documents keep the SDK's pool.
DEFAULT_FAST_READ_MIN_SIZE = 8 * 1024 * 1024
# Presigned URLs for docproxy's own reads: used at once, so short-lived.
FAST_READ_URL_SECONDS = 300


@dataclass(frozen=True, slots=True)
class S3Options:
    store: StoreOptions
    region: str | None = None
    key: str | None = None  # None: botocore's default credential chain
    secret: str | None = None
    session_token: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    fast_read_min_size: int | None = DEFAULT_FAST_READ_MIN_SIZE  # None: always the SDK

    def __repr__(self) -> str:  # never print secrets into logs
        return f"S3Options(store={self.store!r}, region={self.region!r})"


class S3Backend(FsspecBackend):
    schemes: ClassVar[tuple[str, ...]] = ("s3", "s3a")
    options: S3Options

    @classmethod
    def parse_options(cls, section: Section) -> S3Options:
        store = parse_store_options(section)
        key = secret_from_env(section, "key_env")
        secret = secret_from_env(section, "secret_env")
        if section.has("key_env") != section.has("secret_env"):
            missing = "secret_env" if section.has("key_env") else "key_env"
            section.error(missing, "required together with key_env and secret_env")
        return S3Options(
            store=store,
            region=_region(section),
            key=key,
            secret=secret,
            session_token=secret_from_env(section, "session_token_env"),
            max_connections=section.integer("max_connections", DEFAULT_MAX_CONNECTIONS, minimum=1),
            fast_read_min_size=_fast_read_min_size(section),
        )

    def _client_arguments(self, endpoint_url: str | None) -> dict[str, Any]:
        arguments: dict[str, Any] = {"region_name": self.options.region}
        if endpoint_url:
            arguments["endpoint_url"] = endpoint_url
        if self.options.key:
            arguments["aws_access_key_id"] = self.options.key
            arguments["aws_secret_access_key"] = self.options.secret
            arguments["aws_session_token"] = self.options.session_token
        return arguments

    async def open(self) -> None:
        import botocore.session
        from botocore.config import Config
        from s3fs import S3FileSystem

        timeout = self.store.timeout
        # s3v4 always: with a custom endpoint botocore would otherwise presign with SigV2.
        config = {
            "signature_version": "s3v4",
            "connect_timeout": timeout,
            "read_timeout": timeout,
            # Two attempts, the second at most a second after the first (standard mode waits
            # random(0, 1) s, then doubles): a refused connection, or a stale pooled one, is
            # retried once and quickly, not three times over up to seven seconds.
            "retries": {"total_max_attempts": 2, "mode": "standard"},
            "max_pool_connections": self.options.max_connections,
        }
        client = self._client_arguments(self.store.endpoint_url)
        self.fs = S3FileSystem(
            asynchronous=True,
            skip_instance_cache=True,
            endpoint_url=client.pop("endpoint_url", None),
            key=client.pop("aws_access_key_id", None),
            secret=client.pop("aws_secret_access_key", None),
            token=client.pop("aws_session_token", None),
            client_kwargs=client,
            config_kwargs=config,
        )
        await self.fs.set_session()
        # The signer names the public endpoint, so the signature matches the host clients use.
        signing_endpoint = self.store.public_endpoint_url or self.store.endpoint_url

        def make_signer() -> Any:
            return botocore.session.get_session().create_client(
                "s3",
                **self._client_arguments(signing_endpoint),
                config=Config(signature_version="s3v4"),
            )

        self._signer = await anyio.to_thread.run_sync(make_signer)
        self._fast_reads = self.options.fast_read_min_size is not None and not _proxied(
            self.store.endpoint_url
        )
        if not self._fast_reads:
            return  # no fast reads: neither their signer nor their TLS context is needed
        # docproxy's own fast reads name the endpoint it reaches the store by.
        self._reader = self._signer
        if self.store.public_endpoint_url:
            self._reader = await anyio.to_thread.run_sync(
                lambda: botocore.session.get_session().create_client(
                    "s3",
                    **self._client_arguments(self.store.endpoint_url),
                    config=Config(signature_version="s3v4"),
                )
            )
        self._ssl = await anyio.to_thread.run_sync(_ssl_context)

    async def close(self) -> None:
        if self.fs is not None and getattr(self.fs, "_s3creator", None) is not None:
            await self.fs._s3creator.__aexit__(None, None, None)
            self.fs._s3 = None
        signer, reader = getattr(self, "_signer", None), getattr(self, "_reader", None)
        for client in (signer, reader if reader is not signer else None):
            if client is not None:
                client.close()
        self.fs = None

    async def probe(self) -> None:
        """HEAD of the bucket: answers, credentials accepted, bucket there."""
        await self._call("probe", "", self.fs._s3.head_bucket(Bucket=self.store.bucket))

    def _bucket_and_key(self, key: str) -> tuple[str, str]:
        return self.store.bucket, self._object_key(key)

    async def stream_range(
        self, key: str, start: int, end: int, version: Hashable | None = None
    ) -> AsyncIterator[bytes]:
        """One ranged GET for the whole span, its body read in chunks of ``chunk_size``: for a
        span of ``fast_read_min_size`` or more straight into the chunks, else through the SDK.

        Through the SDK, the next chunk is read from the body while this one is sent (one chunk
        ahead, no more: about two chunks per stream in memory), and a chunk the body handed out
        whole is yielded as it is, without copying it.
        """
        if end <= start:
            return
        url = self._fast_read_url(key, end - start, version)
        if url is not None:
            chunks = ranged_get(
                url, start, end, chunk_size=self.chunk_size, timeout=self.store.timeout,
                ssl_context=self._ssl,
                headers={"If-Match": str(version)} if version is not None else None,
            )  # fmt: skip
            try:
                first = await anext(chunks, None)
            except Unexpected as exc:
                # Not a plain body (an error, a redirect, a chunked answer): the SDK's turn.
                logger.debug("fast read of %s:%s: %s; reading through the SDK", self.name, key, exc)
            else:
                async with aclosing(chunks):
                    if first is not None:
                        yield first
                    async for chunk in chunks:
                        yield chunk
                return
        async for chunk in self._stream_through_sdk(key, start, end, version):
            yield chunk

    async def stat(self, key: str) -> ObjectInfo:
        """With the ETag as the version: each read is a GET with ``If-Match``."""
        info = await super().stat(key)
        return replace(info, version=info.etag)

    def _fast_read_url(self, key: str, length: int, version: Hashable | None = None) -> str | None:
        """A presigned GET for docproxy's own read of ``length`` bytes, or None (SDK read)."""
        threshold = self.options.fast_read_min_size
        if not self._fast_reads or threshold is None or length < threshold:
            return None
        bucket, object_key = self._bucket_and_key(key)
        try:
            params = {"Bucket": bucket, "Key": object_key}
            if version is not None:
                params["IfMatch"] = str(version)  # signed: the GET must send it
            return self._reader.generate_presigned_url(
                "get_object",
                Params=params,
                ExpiresIn=FAST_READ_URL_SECONDS,
            )
        except Exception as exc:  # no credentials (anonymous access): the SDK reads
            logger.debug("fast read of %s:%s not signed: %s", self.name, key, exc)
            return None

    async def _stream_through_sdk(
        self, key: str, start: int, end: int, version: Hashable | None = None
    ) -> AsyncIterator[bytes]:
        bucket, object_key = self._bucket_and_key(key)
        pinned = {"IfMatch": str(version)} if version is not None else {}
        try:
            response = await self._call(
                "read",
                key,
                self.fs._call_s3(
                    "get_object",
                    Bucket=bucket,
                    Key=object_key,
                    Range=f"bytes={start}-{end - 1}",
                    **pinned,
                ),
            )
        except StorageError as exc:
            if pinned and _precondition_failed(exc):
                raise ObjectChanged(f"{self.name}:{key} changed since it was looked at") from exc
            raise
        body = response["Body"]

        def read(position: int, size: int) -> Awaitable[bytes]:
            return self._call("read", key, _fill(body, size))  # the body is read in order

        try:
            if response.get("ContentLength") not in (None, end - start):
                raise StorageError(
                    f"read {self.name}:{key}: store answered {response['ContentLength']} bytes "
                    f"for a {end - start}-byte range"
                )
            chunks = read_ahead(read, start, end, self.chunk_size, f"{self.name}:{key}")
            async with aclosing(chunks):  # its pending read ends before the body is closed
                async for chunk in chunks:
                    yield chunk
        finally:
            body.close()

    def _presign_native(self, request: PresignRequest) -> str:
        bucket, object_key = self._bucket_and_key(request.key)
        try:
            return self._signer.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": bucket,
                    "Key": object_key,
                    "ResponseContentDisposition": request.content_disposition,
                    "ResponseContentType": request.content_type,
                },
                ExpiresIn=request.expires_in,
            )
        except Exception as exc:  # no credentials in the chain, bad parameters
            raise StorageError(f"presign {self.name}:{request.key}: {exc}") from exc


def _region(section: Section) -> str | None:
    """``region``, checked as botocore checks it when the client is made (at start)."""
    from botocore.exceptions import InvalidRegionError
    from botocore.utils import validate_region_name

    region = section.string("region")
    if region is not None:
        try:
            validate_region_name(region)
        except InvalidRegionError:
            section.error("region", f"not a region name such as eu-west-1 (got {region!r})")
            return None
    return region


def _fast_read_min_size(section: Section) -> int | None:
    """``fast_read_min_size``: a size (``0`` for every read) or ``false`` (always the SDK)."""
    if section.has("fast_read_min_size") and section.raw("fast_read_min_size") is False:
        return None
    return section.size("fast_read_min_size", DEFAULT_FAST_READ_MIN_SIZE, minimum=0)


def _proxied(endpoint_url: str | None) -> bool:
    """Whether the environment sends requests to the store through a proxy (``HTTPS_PROXY``...).
    The SDK honours it; fast reads connect directly, so they are left to the SDK then."""
    from botocore.utils import get_environ_proxies

    return bool(get_environ_proxies(endpoint_url or "https://s3.amazonaws.com"))


def _ssl_context() -> ssl.SSLContext:
    """Verified TLS with the CA bundle botocore would use (``AWS_CA_BUNDLE``, else certifi's)."""
    import botocore.session
    from botocore.httpsession import get_cert_path

    bundle = botocore.session.get_session().get_config_variable("ca_bundle")
    return ssl.create_default_context(cafile=bundle or get_cert_path(True))


async def _fill(body: Any, wanted: int) -> bytes:
    """Up to ``wanted`` bytes of a streaming body; fewer only at its end.

    The body hands out what the socket has (often 64-256 KiB): a short read is not the end,
    so the chunk is filled until the store really has nothing more. One piece is returned as
    it is; several are joined once.
    """
    pieces: list[bytes] = []
    got = 0
    while got < wanted:
        data = await body.read(wanted - got)
        if not data:
            break
        pieces.append(data)
        got += len(data)
    if len(pieces) == 1:
        return pieces[0]
    return b"".join(pieces)


def _precondition_failed(exc: BaseException) -> bool:
    """Whether the store refused an ``If-Match`` (HTTP 412), whatever wraps the SDK's error."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if error.get("Code") == "PreconditionFailed" or status == 412:
                return True
        if "PreconditionFailed" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
