"""Google Cloud Storage through gcsfs; V4 signed URLs from a service-account key.

gcsfs has no async ``open``, so reads are ranged ``_cat_file`` calls (the shared loop in
``fsspec_common``). Signing is offline (RSA over the canonical request) with the key loaded
once; the gcsfs instance that reads may use other credentials (``token``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from backends.base import ObjectChanged, PresignRequest, StorageError
from backends.fsspec_common import FsspecBackend, StoreOptions, parse_store_options
from proxy.config.section import Section

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
# Seconds before the one retry of a connection that could not be made.
CONNECT_RETRY_PAUSE = 0.2
TOKEN_MODES = ("google_default", "cloud", "anon")


@dataclass(frozen=True, slots=True)
class GCSOptions:
    store: StoreOptions
    project: str | None = None
    token: str | None = None  # gcsfs token for reads: google_default, cloud, anon or a key file
    service_account_file: str | None = None  # the key that signs URLs (and reads, by default)


class GCSBackend(FsspecBackend):
    schemes: ClassVar[tuple[str, ...]] = ("gs", "gcs")
    options: GCSOptions

    @classmethod
    def parse_options(cls, section: Section) -> GCSOptions:
        store = parse_store_options(section)
        key_file = section.string("service_account_file")
        if key_file is not None:
            problem = _key_file_problem(key_file)
            if problem:
                section.error("service_account_file", problem)
        elif store.presign == "native":
            section.error(
                "service_account_file",
                "required to presign natively (V4 signing needs a service-account key); "
                "or set presign: proxy",
            )
        token = section.string("token")
        if token is not None and token not in TOKEN_MODES and not os.path.isfile(token):
            section.error("token", f"must be one of {', '.join(TOKEN_MODES)} or a key file path")
        return GCSOptions(
            store=store,
            project=section.string("project"),
            token=token,
            service_account_file=key_file,
        )

    async def open(self) -> None:
        # docproxy only reads objects, which gcsfs's core filesystem does. Its "extended" one
        # (the default since 2026) first probes each bucket over gRPC, which hangs about a
        # minute against anything but Google itself (emulators, private endpoints). gcsfs reads
        # the switch when it is imported, so it is set first.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        from gcsfs import GCSFileSystem

        options = self.options
        # gcsfs finds the project itself (environment, default credentials) unless it is given.
        project = {"project": options.project} if options.project else {}
        # gcsfs presents a client certificate (mutual TLS) on a connector of its own.
        session = {} if _presents_client_certificate() else {"connector": _connector()}
        self.fs = GCSFileSystem(
            asynchronous=True,
            skip_instance_cache=True,
            token=options.token or options.service_account_file or "google_default",
            endpoint_url=self.store.endpoint_url,
            requests_timeout=self.store.timeout,
            session_kwargs=session,
            **project,
        )
        await self.fs._set_session()
        self._signing_client: Any = None
        if self.store.presign == "native" and options.service_account_file:
            from google.cloud import storage
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_file(
                options.service_account_file
            )
            # Building a Client does no I/O; it only carries the signing credentials.
            self._signing_client = storage.Client(
                project=options.project or credentials.project_id, credentials=credentials
            )
        self._signing_endpoint = (
            self.store.public_endpoint_url or self.store.endpoint_url or DEFAULT_ENDPOINT
        )

    async def close(self) -> None:
        if self.fs is not None and self.fs._session is not None:
            await self.fs._session.close()
        self.fs = None

    def _version(self, info: Mapping[str, Any], etag: str | None) -> Hashable | None:
        generation = info.get("generation")
        return str(generation) if generation else None  # a new one with every write

    async def _read(self, key: str, start: int, end: int, version: Hashable | None) -> bytes:
        """Pinned: a ranged GET with ``ifGenerationMatch`` (412 once the object is rewritten),
        and the generation the store names in its answer, if it names one, checked too."""
        if version is None:
            return await super()._read(key, start, end, version)
        return await self._call("read", key, self._read_pinned(key, start, end, str(version)))

    async def _read_pinned(self, key: str, start: int, end: int, generation: str) -> bytes:
        changed = f"{self.name}:{key} changed since it was looked at"
        try:
            headers, body = await self.fs._call(
                "GET",
                self.fs.url(self._path(key)),
                headers={"Range": f"bytes={start}-{end - 1}"},
                ifGenerationMatch=generation,
            )
        except FileExistsError as exc:  # gcsfs's name for 412 Precondition Failed
            raise ObjectChanged(changed) from exc
        served = headers.get("x-goog-generation")
        if served is not None and served != generation:
            raise ObjectChanged(changed)
        return body

    async def probe(self) -> None:
        """The bucket's metadata (one GET): answers, credentials accepted, bucket there."""
        await self._call("probe", "", self.fs._call("GET", f"b/{self.store.bucket}", json_out=True))

    def _presign_native(self, request: PresignRequest) -> str:
        blob = self._signing_client.bucket(self.store.bucket).blob(self._object_key(request.key))
        try:
            return blob.generate_signed_url(
                version="v4",
                method="GET",
                expiration=timedelta(seconds=request.expires_in),
                api_access_endpoint=self._signing_endpoint,
                response_disposition=request.content_disposition,
                response_type=request.content_type,
            )
        except Exception as exc:  # a key that cannot sign
            raise StorageError(f"presign {self.name}:{request.key}: {exc}") from exc


class ConnectFailed(Exception):
    """No connection to the store could be made (refused, unknown host, TLS handshake failed).

    Not an aiohttp error, so gcsfs passes it on at once: it retries aiohttp's errors six times,
    one second and more apart, which made a refused connection wait out the whole timeout.
    """


def _connector() -> Any:
    """An aiohttp connector that tries a connection twice, a moment apart, then raises
    ``ConnectFailed``. A connection that is made and then fails is still gcsfs's to retry."""
    import aiohttp

    class FailFastConnector(aiohttp.TCPConnector):
        async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
            try:
                return await super().connect(req, traces, timeout)
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(CONNECT_RETRY_PAUSE)
            try:
                return await super().connect(req, traces, timeout)
            except aiohttp.ClientConnectorError as exc:
                raise ConnectFailed(str(exc)) from exc

    return FailFastConnector()


def _presents_client_certificate() -> bool:
    """gcsfs's own test for presenting google-auth's default client certificate."""
    from google.auth.transport import mtls

    should_use = getattr(mtls, "should_use_client_cert", None)  # google-auth 2.x onwards
    return bool(should_use and should_use() and mtls.has_default_client_cert_source())


def _key_file_problem(path: str) -> str | None:
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        return f"cannot read {path!r} ({exc.strerror})"
    except ValueError:
        return f"{path!r} is not a JSON service-account key"
    if not isinstance(data, dict) or data.get("type") != "service_account":
        return f"{path!r} is not a service-account key (type must be service_account)"
    for field in ("client_email", "private_key"):
        if not data.get(field):
            return f"{path!r} has no {field}"
    return None
