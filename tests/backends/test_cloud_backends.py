"""The cloud backends in-process: config errors with key paths, and ranged reads of any span."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Hashable
from pathlib import Path

import pytest

from backends.base import InvalidKey, ObjectNotFound, StorageError
from backends.memory import MemoryBackend
from backends.routing import StorageRouter
from proxy.config.section import Section
from proxy.config.settings import ConfigError, parse_settings
from tests.cloud_servers import AZURITE_ACCOUNT, AZURITE_KEY, Store, new_bucket, opened_backend
from tests.config.test_config import clean_env, docproxy
from tests.harness import base_config, free_port, merge, write_config


def problems(tmp_path: Path, backends: dict) -> list[str]:
    config = merge(base_config(tmp_path), {"storage": {"backends": backends}})
    with pytest.raises(ConfigError) as caught:
        parse_settings(config)
    return caught.value.problems


def test_config_names_each_bad_key(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCPROXY_UNSET_VARIABLE", raising=False)
    found = problems(
        tmp_path,
        {
            "s3": {
                "protocol": "s3",
                "key_env": "DOCPROXY_UNSET_VARIABLE",
                "regoin": "x",
                "region": "eu west 1",  # botocore would refuse it at start
                "max_connections": 0,
            },
            "gcs": {"protocol": "gcs", "bucket": "b", "chunk_size": "lots"},
            "az": {"protocol": "az", "container": "c", "account_name": "acct"},
            "mem": {"protocol": "memory", "bucket": "m/n", "presign": "sometimes"},
            "web": {"protocol": "http"},
        },
    )
    expected = [
        "storage.backends.s3.bucket: required",
        "storage.backends.s3.key_env: environment variable DOCPROXY_UNSET_VARIABLE is not set",
        "storage.backends.s3.secret_env: required together with key_env and secret_env",
        "storage.backends.s3.regoin: unknown key",
        "storage.backends.s3.max_connections: must be at least 1 (got 0)",
        "storage.backends.s3.region: not a region name such as eu-west-1 (got 'eu west 1')",
        "storage.backends.gcs.chunk_size: must be a byte size such as 1048576 or '1MiB' "
        "(got 'lots')",
        "storage.backends.gcs.service_account_file: required to presign natively (V4 signing "
        "needs a service-account key); or set presign: proxy",
        "storage.backends.az.account_key_env: required to presign natively (a service SAS is "
        "signed with the account key); give account_key_env or connection_string_env, or set "
        "presign: proxy",
        "storage.backends.mem.bucket: must be a bare name without '/' (got 'm/n')",
        "storage.backends.mem.presign: must be one of native, proxy (got 'sometimes')",
    ]
    for problem in expected:
        assert problem in found, (problem, found)
    assert any(p.startswith("storage.backends.web.protocol: must be one of") for p in found)


def test_config_accepts_proxy_presigning_without_keys(tmp_path):
    config = merge(
        base_config(tmp_path),
        {
            "storage": {
                "backends": {
                    "gcs": {"protocol": "gcs", "bucket": "b", "presign": "proxy"},
                    "az": {
                        "protocol": "az",
                        "container": "c",
                        "account_name": "a",
                        "presign": "proxy",
                    },
                    "s3": {"protocol": "s3", "bucket": "b", "prefix": "/in/here/"},
                }
            }
        },
    )
    settings = parse_settings(config)
    s3 = next(b for b in settings.storage.backends if b.name == "s3")
    assert s3.options.store.prefix == "in/here"
    assert s3.options.key is None  # botocore's default chain
    assert s3.options.max_connections == 256  # not botocore's 10: one per streaming download


def test_gcs_key_file_is_checked(tmp_path):
    bad = tmp_path / "key.json"
    bad.write_text('{"type": "authorized_user"}')
    found = problems(
        tmp_path, {"gcs": {"protocol": "gcs", "bucket": "b", "service_account_file": str(bad)}}
    )
    prefix = f"storage.backends.gcs.service_account_file: {str(bad)!r}"
    assert f"{prefix} is not a service-account key (type must be service_account)" in found


def memory_backend(chunk_size: int = 4096, prefix: str = "") -> MemoryBackend:
    errors: list[str] = []
    raw = {"bucket": f"m{os.getpid()}", "chunk_size": chunk_size, "prefix": prefix}
    options = MemoryBackend.parse_options(Section(raw, "memory", errors))
    assert errors == []
    return MemoryBackend("mem", options)


async def collect(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    data = b""
    async for chunk in chunks:
        assert 0 < len(chunk) <= limit
        data += chunk
    return data


SPANS = [
    (0, 0),
    (0, 1),
    (0, 4096),
    (1, 4097),
    (4095, 4097),
    (100, 20_000),
    (0, 20_011),
    (20_010, 20_011),
]


async def test_memory_backend_reads_any_span():
    backend = memory_backend(prefix="docs")
    await backend.open()
    body = os.urandom(20_011)
    key = backend.key_for("a/b.bin")
    backend.fs.sync_fs.pipe_file(backend._path(key), body)
    assert (await backend.stat(key)).size == len(body)
    for start, end in SPANS:
        assert await collect(backend.stream_range(key, start, end), 4096) == body[start:end]
    with pytest.raises(StorageError, match="bytes early"):
        await collect(backend.stream_range(key, 0, len(body) + 10), 4096)
    with pytest.raises(ObjectNotFound):
        await backend.stat(backend.key_for("nope"))
    await backend.close()


class ShortReads(MemoryBackend):
    """A store that answers every ranged read with at most 1000 bytes, as networks may."""

    async def _read(self, key: str, start: int, end: int, version: Hashable | None) -> bytes:
        return (await super()._read(key, start, end, version))[:1000]


async def test_short_reads_are_not_the_end():
    backend = ShortReads("short", memory_backend().options)
    await backend.open()
    body = os.urandom(10_000)
    backend.fs.sync_fs.pipe_file(backend._path("x"), body)
    assert await collect(backend.stream_range("x", 5, 9_999), 1000) == body[5:9_999]
    await backend.close()


async def test_abandoned_stream_cancels_its_read_ahead():
    backend = memory_backend()
    await backend.open()
    backend.fs.sync_fs.pipe_file(backend._path("y"), os.urandom(50_000))
    chunks = backend.stream_range("y", 0, 50_000)
    assert len(await anext(chunks)) == 4096
    await chunks.aclose()  # the pending read-ahead is cancelled, not leaked
    await backend.close()


def test_routing_by_scheme_and_bucket_refuses_traversal():
    a, b = memory_backend(prefix="p"), memory_backend()
    router = StorageRouter({"a": a, "b": b}, "a")
    assert router.locate("x/y.pdf") == (a, "p/x/y.pdf")
    assert router.locate(f"memory://{a.store.bucket}/k/v.pdf") == (a, "k/v.pdf")
    for path in ("../x", "/etc/passwd", f"memory://{a.store.bucket}/../x", "s3://nobody/x"):
        with pytest.raises(InvalidKey):
            router.locate(path)


ODD_KEY = "Q1 report #1+final (ü)&x=1?.pdf"


@pytest.mark.parametrize(
    ("path", "key"),
    [
        # Raw keys: taken as written (nothing in them is read as a query, fragment or escape).
        (ODD_KEY, ODD_KEY),
        ("a %41 b.pdf", "a %41 b.pdf"),  # a space: not a percent-encoded path
        ("100%.pdf", "100%.pdf"),  # a % that starts no escape
        ("x%FF.pdf", "x%FF.pdf"),  # escapes that are not UTF-8
        ("plus+sign.pdf", "plus+sign.pdf"),
        ("v.pdf?versionId=3", "v.pdf?versionId=3"),
        # Percent-encoded paths: only URL characters, and every % starts a UTF-8 escape.
        ("Q1%20report%20%231%2Bfinal%20%28%C3%BC%29%26x%3D1%3F.pdf", ODD_KEY),
        ("dir%2Fa.pdf", "dir/a.pdf"),
        ("report%2025.pdf", "report 25.pdf"),
    ],
)
def test_full_url_paths_raw_or_percent_encoded(path, key):
    backend = memory_backend()
    router = StorageRouter({"m": backend}, "m")
    assert router.locate(f"memory://{backend.store.bucket}/{path}") == (backend, key)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("a/%2E%2E/%2E%2E/x", "parent reference"),
        ("x%00y", "NUL"),
        ("", "empty"),
    ],
)
def test_decoded_url_paths_are_checked_like_raw_ones(path, reason):
    backend = memory_backend()
    router = StorageRouter({"m": backend}, "m")
    with pytest.raises(InvalidKey, match=reason):
        router.locate(f"memory://{backend.store.bucket}/{path}")


AZURE_KEY_ENV = {"DOCPROXY_TEST_AZURE_KEY": AZURITE_KEY}
AZURE_REFUSED = {
    "ip-without-account": (
        {
            "account_name": AZURITE_ACCOUNT,
            "account_key_env": "DOCPROXY_TEST_AZURE_KEY",
            "endpoint_url": "http://127.0.0.1:10000",
        },
        "storage.backends.az.endpoint_url: ",
    ),
    "token-over-http": (
        {"account_name": "acct", "presign": "proxy", "endpoint_url": "http://blob.internal/acct"},
        "storage.backends.az.endpoint_url: ",
    ),
    "malformed-connection-string": (
        {"connection_string_env": "DOCPROXY_TEST_AZURE_CONNECTION"},
        "storage.backends.az.connection_string_env: ",
    ),
}


@pytest.mark.parametrize("case", sorted(AZURE_REFUSED))
def test_azure_configs_serve_would_refuse_are_refused_by_check_config(tmp_path, case):
    options, problem = AZURE_REFUSED[case]
    config = merge(
        base_config(tmp_path),
        {"storage": {"backends": {"az": {"protocol": "az", "container": "c", **options}}}},
    )
    path = write_config(tmp_path / "config.yaml", config)
    env = clean_env(
        **AZURE_KEY_ENV,
        DOCPROXY_TEST_AZURE_CONNECTION=f"AccountName=a;AccountKey={AZURITE_KEY};junk",
    )
    checked = docproxy("check-config", "--config", str(path), env=env)
    served = docproxy("serve", "--config", str(path), "--port", str(free_port()), env=env)
    for result in (checked, served):
        assert result.returncode != 0, result
        assert "Traceback" not in result.stderr
        assert problem in result.stderr, result.stderr
    assert served.stderr == checked.stderr


@pytest.mark.parametrize("kind", ["s3", "gcs", "az"])
async def test_cloud_backend_reads_any_span(stores, kind):
    store: Store = stores[kind]
    bucket = new_bucket(store)
    body = os.urandom(20_011)
    store.put(bucket, "spans/object.bin", body)
    async with opened_backend(store, bucket, chunk_size=4096, prefix="spans") as backend:
        key = backend.key_for("object.bin")
        info = await backend.stat(key)
        assert info.size == len(body) and info.etag and info.modified
        for start, end in SPANS:
            assert await collect(backend.stream_range(key, start, end), 4096) == body[start:end]
        with pytest.raises(ObjectNotFound):
            await collect(backend.stream_range(backend.key_for("absent.bin"), 0, 10), 4096)
