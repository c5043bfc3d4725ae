"""The embedded default (SQLite catalog, local folder) starts without the libraries that only
other configs need: a sidecar runs in every application pod, so what it imports is memory and
start time paid many times. The running server reports its imports (``PYTHONPROFILEIMPORTTIME``
prints one line per module to its log)."""

from __future__ import annotations

import re

import httpx

from tests.harness import Service, assert_envelope
from tests.samples import insert_document, png_bytes, store_file

# Catalog servers' pool, cloud stores' SDKs, the download client's HTTP library, the JWT library
# with the `cryptography` it pulls in (loaded by the first token, not by the start), the Redis
# client (state in Redis only), uvicorn's h11 parser (`docproxy serve` parses with httptools),
# the ZIP writer and its CRC (the first archive), python-magic (the first document whose name
# and type disagree) and orjson (JSON log lines only).
NOT_FOR_THE_EMBEDDED_DEFAULT = frozenset(
    {
        "databases",
        "sqlalchemy",
        "asyncpg",
        "aiomysql",
        "s3fs",
        "aiobotocore",
        "botocore",
        "boto3",
        "gcsfs",
        "google",
        "adlfs",
        "azure",
        "httpx",
        "joserfc",
        "redis",
        "h11",
        "cryptography",
        "zipstream",
        "isal",
        "magic",
        "orjson",
    }
)
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", re.MULTILINE)
IMPORTS_LOGGED = {"PYTHONPROFILEIMPORTTIME": "1"}


def imported_packages(service: Service) -> set[str]:
    """The top-level packages the server process has imported so far."""
    return {name.split(".")[0] for name in _IMPORT_LINE.findall(service.log())}


def test_the_embedded_default_imports_no_other_configs_libraries(make_service):
    service = make_service(env=IMPORTS_LOGGED)
    assert service.health()["status"] == "ok"
    packages = imported_packages(service)
    assert {"starlette", "uvicorn", "yaml", "sqlite3"} <= packages  # the log does list imports
    assert packages & NOT_FOR_THE_EMBEDDED_DEFAULT == set()


def test_the_jwt_library_loads_with_the_first_token_and_tokens_work(make_service):
    service = make_service(env=IMPORTS_LOGGED)
    assert "joserfc" not in imported_packages(service)
    token = service.token()
    assert "joserfc" in imported_packages(service)
    url = f"{service.base_url}/download/no-such-document"
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert_envelope(response, 437, "Document not found")  # the token was accepted
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = httpx.get(url, headers={"Authorization": f"Bearer {forged}"})
    assert_envelope(response, 403, "UNAUTHORIZED")


def test_libmagic_loads_with_the_first_sniff_and_sniffs(make_service):
    service = make_service(env=IMPORTS_LOGGED)
    assert "magic" not in imported_packages(service)
    assert "WARNING" not in service.log()  # the start found the library without python-magic
    workdir = service.config_path.parent
    store_file(workdir / "files", "unnamed", png_bytes())
    insert_document(workdir / "docproxy.db", "unnamed", file_path="unnamed")  # no name, no type
    auth = {"Authorization": f"Bearer {service.token()}"}
    response = httpx.get(f"{service.base_url}/download/unnamed", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert "magic" in imported_packages(service)
