"""SIGHUP: every worker re-reads config.yaml (clients, keys, limits) without dropping a
connection; a file that does not validate is logged key by key and changes nothing."""

from __future__ import annotations

import signal
import socket

import httpx
import pytest
import yaml

from tests.harness import CLIENT_SECRET, assert_envelope, run_cli
from tests.state.shared import eventually, fresh_window

pytestmark = pytest.mark.timeout(180)
NEW_CLIENT = {"client_id": "new-client", "client_secret": "new-secret"}


def token_status(service, client_id: str, secret: str) -> int:
    response = httpx.post(
        f"{service.base_url}/generate-client-auth-token",
        json={"client_id": client_id, "client_secret": secret},
        timeout=10,
    )
    return response.status_code


def rewrite(service, change) -> None:
    config = yaml.safe_load(service.config_path.read_text())
    change(config)
    service.config_path.write_text(yaml.safe_dump(config))


def hang_up(service) -> None:
    service.process.send_signal(signal.SIGHUP)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_applies_new_clients_and_keeps_a_running_download(make_service, tmp_path, workers):
    service = make_service({"server": {"workers": workers}})
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (8 << 20))
    document = run_cli(service.config_path, "documents", "add", str(big)).stdout.strip()
    token = service.token()
    assert token_status(service, "new-client", "new-secret") == 403
    # A download in flight: its head read, most of its body still to come.
    sock = socket.create_connection(("127.0.0.1", service.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(
        f"GET /download/{document} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    received = sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 200")
    rewrite(service, lambda c: c["auth"]["clients"].append(NEW_CLIENT))
    hang_up(service)
    # Wait for every worker's reload line before asking: probing earlier would pile up refused
    # attempts for new-client, and the failed-login limit would answer 429 after the reload.
    eventually(lambda: service.log().count("config reloaded:") == workers)
    # New connections land on either worker, and each must know the new client.
    assert all(token_status(service, "new-client", "new-secret") == 200 for _ in range(8))
    assert token_status(service, "test-client", CLIENT_SECRET) == 200
    while chunk := sock.recv(1 << 20):
        received += chunk
    sock.close()
    assert received.endswith(b"x" * 1024) and len(received.split(b"\r\n\r\n", 1)[1]) == 8 << 20
    assert service.process.poll() is None


def test_an_invalid_file_is_logged_by_key_and_the_old_settings_stay(make_service):
    service = make_service()
    rewrite(service, lambda c: c["auth"].update(token_ttl="soon", clients=[NEW_CLIENT]))
    hang_up(service)
    eventually(lambda: "auth.token_ttl: must be an integer, not str" in service.log())
    assert "config reload refused, the running settings stay" in service.log()
    assert token_status(service, "test-client", CLIENT_SECRET) == 200
    assert token_status(service, "new-client", "new-secret") == 403


def test_sighup_applies_new_limits(make_service, tmp_path):
    service = make_service()
    source = tmp_path / "a.txt"
    source.write_bytes(b"a\n")
    document = run_cli(service.config_path, "documents", "add", str(source)).stdout.strip()
    url = f"{service.base_url}/download/{document}"
    auth = {"authorization": f"Bearer {service.token()}"}
    assert httpx.get(url, headers=auth).status_code == 200
    rewrite(service, lambda c: c.update(limits={"downloads_per_minute": 1}))
    hang_up(service)
    eventually(lambda: "config reloaded" in service.log())
    fresh_window()
    assert httpx.get(url, headers=auth).status_code == 200
    assert_envelope(httpx.get(url, headers=auth), 429, "Too many requests")
