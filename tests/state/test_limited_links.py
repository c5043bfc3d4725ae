"""POST /download with expires_in and max_downloads: docproxy's own links, their uses counted
in the shared state (SQLite on one host, Redis across processes)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from tests.harness import assert_envelope, run_cli

pytestmark = pytest.mark.timeout(180)
DATA = b"0123456789" * 10


@pytest.fixture(scope="module")
def served(make_module_service, tmp_path_factory):
    service = make_module_service({"presign": {"ttl": 600}})
    source = tmp_path_factory.mktemp("limited") / "limited.txt"
    source.write_bytes(DATA)
    run_cli(service.config_path, "documents", "add", "--id", "doc-limited", str(source))
    return service, service.token()


def post(service, token: str, **fields) -> httpx.Response:
    return httpx.post(
        f"{service.base_url}/download",
        json={"document_id": "doc-limited", **fields},
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


def make_link(service, token: str, **fields) -> str:
    response = post(service, token, **fields)
    assert response.status_code == 200, response.text
    return response.json()["data"]["download_url"]


def get(url: str, method: str = "GET", **headers: str) -> httpx.Response:
    return httpx.request(method, url, headers=headers, timeout=10)


def assert_refused(response: httpx.Response) -> None:
    assert_envelope(response, 403, "UNAUTHORIZED")


def test_a_link_serves_max_downloads_uses_then_403(served):
    service, token = served
    url = make_link(service, token, max_downloads=2)
    assert urlsplit(url).path == "/links/doc-limited"
    assert get(url, "HEAD").status_code == 200  # no body: not a use
    for _ in range(2):
        response = get(url)
        assert (response.status_code, response.content) == (200, DATA)
    assert_refused(get(url))
    assert get(url, "HEAD").status_code == 403


def test_a_resumed_range_is_served_without_counting(served):
    service, token = served
    url = make_link(service, token, max_downloads=1)
    assert_refused(get(url, range="bytes=50-"))  # nothing to resume yet
    first = get(url, range="bytes=0-49")  # starts at byte 0: the one use
    assert (first.status_code, first.content) == (206, DATA[:50])
    for _ in range(2):
        rest = get(url, range="bytes=50-")
        assert (rest.status_code, rest.content) == (206, DATA[50:])
    assert_refused(get(url))  # a second use
    assert_refused(get(url, range="bytes=50-"))  # and the link is spent for resumes too


def test_each_post_makes_a_link_with_its_own_count(served):
    service, token = served
    first, second = (make_link(service, token, max_downloads=1) for _ in range(2))
    assert first != second
    assert get(first).status_code == 200
    assert get(second).status_code == 200
    assert_refused(get(first))
    assert_refused(get(second))


def test_uses_are_counted_atomically_under_concurrency(served):
    service, token = served
    url = make_link(service, token, max_downloads=3)
    with ThreadPoolExecutor(12) as pool:
        codes = sorted(pool.map(lambda _: get(url).status_code, range(12)))
    assert codes == [200] * 3 + [403] * 9


def test_expires_in_shortens_the_link(served):
    service, token = served
    url = make_link(service, token, expires_in=1)
    expires = int(dict(p.split("=") for p in urlsplit(url).query.split("&"))["expires"])
    assert expires <= time.time() + 1
    while time.time() < expires:
        time.sleep(0.1)
    assert_refused(get(url))


def test_an_altered_limit_is_refused(served):
    service, token = served
    url = make_link(service, token, max_downloads=1)
    assert_refused(get(url.replace("uses=1", "uses=9")))
    assert_refused(get(url.replace("&link=", "&link=A")))
    assert get(url).status_code == 200


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expires_in": 0}, "expires_in must be an integer from 1 to 600"),
        ({"expires_in": 601}, "expires_in must be an integer from 1 to 600"),
        ({"expires_in": "60"}, "expires_in must be an integer from 1 to 600"),
        ({"expires_in": 60.0}, "expires_in must be an integer from 1 to 600"),
        ({"expires_in": True}, "expires_in must be an integer from 1 to 600"),
        ({"max_downloads": 0}, "max_downloads must be an integer from 1 to 1000000000"),
        ({"max_downloads": -1}, "max_downloads must be an integer from 1 to 1000000000"),
        ({"max_downloads": 10**10}, "max_downloads must be an integer from 1 to 1000000000"),
        ({"max_downloads": [1]}, "max_downloads must be an integer from 1 to 1000000000"),
    ],
)
def test_other_values_answer_435_naming_the_field(served, fields, message):
    service, token = served
    assert_envelope(post(service, token, **fields), 435, message)


def test_a_max_downloads_link_is_spent_across_processes_sharing_redis(
    make_service, tmp_path, redis_state
):
    first = make_service(redis_state)
    second = make_service(redis_state)
    source = tmp_path / "shared.txt"
    source.write_bytes(DATA)
    run_cli(first.config_path, "documents", "add", "--id", "doc-limited", str(source))
    url = make_link(first, first.token(), max_downloads=1)
    path = urlsplit(url)
    through_second = f"{second.base_url}{path.path}?{path.query}"
    assert get(through_second).content == DATA
    assert_refused(get(url))  # through the first process: already used


def test_a_state_store_that_fails_is_500_logged_once_with_its_cause(make_service, tmp_path):
    from tests.harness import free_port

    dead = {"state": {"redis_url": f"redis://127.0.0.1:{free_port()}/0"}}
    service = make_service({**dead, "limits": {"presigns_per_minute": 5}})
    source = tmp_path / "limited.txt"
    source.write_bytes(DATA)
    run_cli(service.config_path, "documents", "add", "--id", "doc-limited", str(source))
    token = service.token()
    assert_envelope(post(service, token, max_downloads=1), 500, "Failed to generate download URL")
    assert service.log().count("shared state failed counting presigns: Redis at redis://") == 1
    assert "Traceback" not in service.log()
