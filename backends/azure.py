"""Azure Blob Storage through adlfs; read-only service SAS signed offline with the account key.

adlfs has no async ``open``, so reads are ranged ``_cat_file`` calls (the shared loop in
``fsspec_common``).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar
from urllib.parse import quote

from backends.base import PresignRequest, StorageError
from backends.fsspec_common import (
    FsspecBackend,
    StoreOptions,
    parse_store_options,
    secret_from_env,
)
from backends.options import Section


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
    """``Key=Value;...`` into a dict (keys as written; values may contain '=')."""
    fields: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, field = part.strip().partition("=")
        if sep:
            fields[name] = field
    return fields


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
        if connection_string is not None:
            fields = parse_connection_string(connection_string)
            account_name = account_name or fields.get("AccountName")
            account_key = account_key or fields.get("AccountKey")
            endpoint_url = endpoint_url or fields.get("BlobEndpoint", "").rstrip("/") or None
            if not account_name:
                section.error("connection_string_env", "the connection string has no AccountName")
        elif account_name is None and not section.has("account_name"):
            section.error("account_name", "required (or give connection_string_env)")
        if store.presign == "native" and account_name and not account_key:
            section.error(
                "account_key_env",
                "required to presign natively (a service SAS is signed with the account key); "
                "give account_key_env or connection_string_env, or set presign: proxy",
            )
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

        options = self.options
        if options.connection_string is not None:
            arguments: dict[str, object] = {"connection_string": options.connection_string}
        elif options.account_key is not None:
            arguments = {"account_name": options.account_name, "account_key": options.account_key}
        else:  # the default chain: environment, managed identity, Azure CLI...
            arguments = {"account_name": options.account_name, "anon": False}
        if options.connection_string is None and self.store.endpoint_url:
            arguments["account_host"] = self.store.endpoint_url.split("://", 1)[1]
        self.fs = AzureBlobFileSystem(asynchronous=True, skip_instance_cache=True, **arguments)
        self._sas_base = (self.store.public_endpoint_url or options.account_url).rstrip("/")

    async def close(self) -> None:
        fs, self.fs = self.fs, None
        if fs is None:
            return
        await fs.service_client.close()
        credential = getattr(fs, "credential", None)
        if credential is not None and hasattr(credential, "close"):
            await credential.close()
        # adlfs also registers exit-time finalizers that close the same clients through the
        # (by then closed) event loop and print "Loop is not running" (adlfs #495). They are
        # done already, so detach them.
        for finalizer in list(getattr(weakref.finalize, "_registry", {})):
            found = finalizer.peek()
            if found is not None and fs in found[2]:
                finalizer.detach()

    def _presign_native(self, request: PresignRequest) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        blob = self._path(request.key).split("/", 1)[1]
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


def _replace_endpoint(store: StoreOptions, endpoint_url: str | None) -> StoreOptions:
    from dataclasses import replace

    return replace(store, endpoint_url=endpoint_url)
