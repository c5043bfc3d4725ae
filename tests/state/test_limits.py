"""limits.downloads_per_minute and limits.presigns_per_minute: a budget per (client id,
subject), 429 with Retry-After past it, shared by processes through Redis."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import assert_envelope, run_cli
from tests.state.shared import fresh_window

pytestmark = pytest.mark.timeout(180)
LIMITS = {"limits": {"downloads_per_minute": 2, "presigns_per_minute": 1}}


def add(service, tmp_path) -> str:
    source = tmp_path / "budget.txt"
    source.write_bytes(b"budget\n")
    return run_cli(service.config_path, "documents", "add", str(source)).stdout.strip()


def download(service, token: str, document_id: str) -> httpx.Response:
    return httpx.get(
        f"{service.base_url}/download/{document_id}",
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


def presign(service, token: str, document_id: str) -> httpx.Response:
    return httpx.post(
        f"{service.base_url}/download",
        json={"document_id": document_id},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


def assert_limited(response: httpx.Response) -> None:
    assert_envelope(response, 429, "Too many requests")
    assert 1 <= int(response.headers["retry-after"]) <= 60


def test_each_caller_has_its_own_budget_per_minute(make_service, tmp_path):
    service = make_service(LIMITS)
    document = add(service, tmp_path)
    jane, john = service.token(), service.token(email="john@example.com")
    fresh_window()
    assert [download(service, jane, document).status_code for _ in range(2)] == [200, 200]
    assert_limited(download(service, jane, document))
    assert download(service, john, document).status_code == 200  # another subject
    assert presign(service, jane, document).status_code == 200  # another budget
    assert_limited(presign(service, jane, document))
    # A refused token spends nothing of anyone's budget.
    assert_envelope(download(service, "x.y.z", document), 403, "UNAUTHORIZED")


def test_without_limits_nothing_is_counted(make_service, tmp_path):
    service = make_service()
    document = add(service, tmp_path)
    token = service.token()
    assert {download(service, token, document).status_code for _ in range(5)} == {200}


def test_processes_sharing_redis_share_the_budget(make_service, tmp_path, redis_state):
    first = make_service({**LIMITS, **redis_state})
    second = make_service({**LIMITS, **redis_state})
    document = add(first, tmp_path)
    token = first.token()
    fresh_window()
    assert download(first, token, document).status_code == 200
    assert download(second, token, document).status_code == 200
    assert_limited(download(first, token, document))
    assert_limited(download(second, token, document))
