"""Azure Blob Storage through adlfs; read-only service SAS signed offline with the account key.

adlfs has no async ``open``, so reads are ranged ``_cat_file`` calls (the shared loop in
``fsspec_common``). The SDK client under adlfs is built here (``_service_client``): adlfs
would make every account URL ``https://`` and keep the SDK's retries, which wait 15 s and more.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from backends.base import ObjectChanged, PresignRequest, StorageError
from backends.fsspec_common import (
    FsspecBackend,
    StoreOptions,
    parse_store_options,
    secret_from_env,
)
from proxy.config.section import Section

# Seconds between retries of a failed store call, give or take a half. The SDK's 15 s and more
# outlast the backend's timeout; this way a refused connection fails within a second, after
# its one retry, and a busy store is asked three times.
RETRY_BACKOFF = 0.5


@dataclass(frozen=True, slots=True)
class AzureOptions:
    store: StoreOptions
    account_name: str | None = None
    account_key: str | None = None
    connection_string: str | None = None

    def __repr__(self) -> str:  # never print secrets into logs
        return f"AzureOptions(store={self.store!r}, account_name={self.account_name!r})"

    @property
    def account_url(self) -> str:
        """The blob endpoint including the account, e.g. ``https://acct.blob.core.windows.net``."""
        if self.store.endpoint_url:
            return self.store.endpoint_url
        return f"https://{self.account_name}.blob.core.windows.net"


def parse_connection_string(value: str) -> dict[str, str]:
    """``Key=Value;...`` into a dict with lower-case keys, as the SDK reads it; ValueError if
    the SDK would refuse it."""
    from azure.core.utils import parse_connection_string as parse

    return parse(value, case_sensitive_keys=False)


class AzureBackend(FsspecBackend):
    schemes: ClassVar[tuple[str, ...]] = ("az", "abfs", "abfss")
    options: AzureOptions

    @classmethod
    def parse_options(cls, section: Section) -> AzureOptions:
        store = parse_store_options(section, bucket_key="container")
        connection_string = secret_from_env(section, "connection_string_env")
        account_name = section.string("account_name")
        account_key = secret_from_env(section, "account_key_env")
        endpoint_url = store.endpoint_url
        endpoint_key = "endpoint_url"
        if connection_string is not None:
            try:
                fields = parse_connection_string(connection_string)
            except ValueError as exc:
                section.error("connection_string_env", f"the Azure SDK refuses it: {exc}")
                fields = {}
            account_name = account_name or fields.get("accountname")
            account_key = account_key or fields.get("accountkey")
            if endpoint_url is None and fields.get("blobendpoint"):
                endpoint_url = fields["blobendpoint"].rstrip("/")
                endpoint_key = "connection_string_env"
            if fields and not account_name:
                section.error("connection_string_env", "the connection string has no AccountName")
        elif account_name is None and not section.has("account_name"):
            section.error("account_name", "required (or give connection_string_env)")
        if store.presign == "native" and account_name and not account_key:
            section.error(
                "account_key_env",
                "required to presign natively (a service SAS is signed with the account key); "
                "give account_key_env or connection_string_env, or set presign: proxy",
            )
        if endpoint_url is not None:
            problem = _endpoint_problem(
                endpoint_url, account_name, signs_in=connection_string is None and not account_key
            )
            if problem:
                section.error(endpoint_key, problem)
        if endpoint_url != store.endpoint_url:
            store = _replace_endpoint(store, endpoint_url)
        return AzureOptions(
            store=store,
            account_name=account_name,
            account_key=account_key,
            connection_string=connection_string,
        )

    def owns(self, netloc: str) -> bool:
        # abfs://container@account.dfs.core.windows.net/... names the account too.
        container, at, host = netloc.partition("@")
        if at and self.options.account_name:
            return container == self.store.bucket and host.split(".")[0] == (
                self.options.account_name
            )
        return container == self.store.bucket

    async def open(self) -> None:
        from adlfs import AzureBlobFileSystem

        client, credential = self._service_client()

        class ClientFileSystem(AzureBlobFileSystem):
            def do_connect(self) -> None:  # adlfs's hook for making the client: use ours
                self.service_client = client

        # The connection string or credential only keeps adlfs from looking for credentials
        # of its own (environment, Azure CLI); the client above is the one that is used.
        self.fs = ClientFileSystem(
            asynchronous=True,
            skip_instance_cache=True,
            account_name=self.options.account_name,
            connection_string=self.options.connection_string,
            credential=credential,
        )
        self._credential = credential
        self._sas_base = (self.store.public_endpoint_url or self.options.account_url).rstrip("/")

    def _service_client(self) -> tuple[Any, Any]:
        """The SDK's client for the account, and the credential it holds (None: the connection
        string's). Its URL is ``account_url`` as configured, scheme included; a connection
        that cannot be made is retried once, after a fraction of a second."""
        from azure.storage.blob.aio import BlobServiceClient, LinearRetry

        options = self.options
        settings: dict[str, Any] = {
            "retry_policy": LinearRetry(
                backoff=RETRY_BACKOFF, random_jitter_range=RETRY_BACKOFF / 2, retry_connect=1
            ),
            "connection_timeout": self.store.timeout,
            "read_timeout": self.store.timeout,
        }
        if options.connection_string is not None:
            client = BlobServiceClient.from_connection_string(options.connection_string, **settings)
            return client, None
        credential: Any
        if options.account_key is not None:
            from azure.core.credentials import AzureNamedKeyCredential

            credential = AzureNamedKeyCredential(options.account_name or "", options.account_key)
        else:  # the default chain: environment, managed identity, Azure CLI...
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return BlobServiceClient(options.account_url, credential=credential, **settings), credential

    async def close(self) -> None:
        fs, self.fs = self.fs, None
        if fs is None:
            return
        await fs.service_client.close()
        credential = getattr(self, "_credential", None)
        if credential is not None and hasattr(credential, "close"):
            await credential.close()
        # adlfs also registers exit-time finalizers that close the same clients through the
        # (by then closed) event loop and print "Loop is not running" (adlfs #495). They are
        # done already, so detach them.
        for finalizer in list(getattr(weakref.finalize, "_registry", {})):
            found = finalizer.peek()
            if found is not None and fs in found[2]:
                finalizer.detach()

    def _version(self, info: Mapping[str, Any], etag: str | None) -> Hashable | None:
        return etag  # a blob's ETag changes with every write

    async def _read(self, key: str, start: int, end: int, version: Hashable | None) -> bytes:
        """Pinned: a ranged download with ``If-Match`` (the SDK's etag condition); adlfs's
        ``_cat_file`` cannot send one."""
        if version is None:
            return await super()._read(key, start, end, version)
        return await self._call("read", key, self._read_pinned(key, start, end, str(version)))

    async def _read_pinned(self, key: str, start: int, end: int, etag: str) -> bytes:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        blob = self.fs.service_client.get_blob_client(self.store.bucket, self._object_key(key))
        try:
            stream = await blob.download_blob(
                offset=start,
                length=end - start,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
            )
            return await stream.readall()
        except ResourceModifiedError as exc:  # 412: written since stat
            raise ObjectChanged(f"{self.name}:{key} changed since it was looked at") from exc
        except ResourceNotFoundError as exc:
            raise FileNotFoundError(key) from exc

    async def probe(self) -> None:
        """The container's properties (one HEAD): answers, credentials accepted, container there."""
        container = self.fs.service_client.get_container_client(self.store.bucket)
        await self._call("probe", "", container.get_container_properties())

    def _presign_native(self, request: PresignRequest) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        blob = self._object_key(request.key)
        try:
            sas = generate_blob_sas(
                account_name=self.options.account_name,
                container_name=self.store.bucket,
                blob_name=blob,
                account_key=self.options.account_key,
                permission=BlobSasPermissions(read=True),
                expiry=datetime.now(UTC) + timedelta(seconds=request.expires_in),
                content_disposition=request.content_disposition,
                content_type=request.content_type,
            )
        except Exception as exc:  # an account key that is not base64
            raise StorageError(f"presign {self.name}:{request.key}: {exc}") from exc
        return f"{self._sas_base}/{quote(self.store.bucket)}/{quote(blob, safe='/')}?{sas}"


def _endpoint_problem(endpoint_url: str, account_name: str | None, *, signs_in: bool) -> str | None:
    """Why the SDK could not use ``endpoint_url``, or None. ``signs_in``: the credential is an
    Azure AD token (no account key, no connection string)."""
    parts = urlsplit(endpoint_url)
    if signs_in and parts.scheme != "https":
        return (
            f"an http:// endpoint needs the account key (account_key_env or "
            f"connection_string_env): Azure AD credentials are only sent over https "
            f"(got {endpoint_url!r})"
        )
    if _addresses_accounts_by_path(parts.hostname or "") and parts.path.strip("/") == "":
        # An emulator (Azurite) or Azure Stack: the account is the first path segment.
        return (
            f"an IP-address or localhost endpoint must name the account in its path, e.g. "
            f"{parts.scheme}://{parts.netloc}/{account_name or 'ACCOUNT'} (got {endpoint_url!r})"
        )
    return None


def _addresses_accounts_by_path(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _replace_endpoint(store: StoreOptions, endpoint_url: str | None) -> StoreOptions:
    from dataclasses import replace

    return replace(store, endpoint_url=endpoint_url)
