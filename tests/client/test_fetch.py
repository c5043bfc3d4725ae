"""``docproxy fetch`` against a running service: downloads, resumes, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.client.fetch import RESUME_SUFFIX
from tests.harness import CLIENT_ID, CLIENT_SECRET, REPO, free_port
from tests.served import Served, random_bytes, sha256

MIB = 1024 * 1024
SIZE = 6 * MIB + 4321
DATA = random_bytes(SIZE, seed=21)


def fetch_command(served: Served, *args: str, token: bool = True) -> list[str]:
    command = [sys.executable, "-m", "proxy", "fetch", *args, "--url", served.service.base_url]
    return [*command, "--token", served.token] if token else command


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DOCPROXY_")}


def run_fetch(
    served: Served, *args: str, cwd: Path, token: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fetch_command(served, *args, token=token),
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean_env(), "PYTHONPATH": str(REPO)},
        timeout=120,
    )


@pytest.fixture(scope="module")
def document(served: Served) -> str:
    return served.add(DATA, "report.txt")


def test_fetch_downloads_with_progress(served, document, tmp_path):
    target = tmp_path / "out.txt"
    result = run_fetch(served, document, "-o", str(target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sha256(target.read_bytes()) == sha256(DATA)
    assert f"saved {target} ({SIZE} bytes)" in result.stderr
    assert not (tmp_path / f"out.txt{RESUME_SUFFIX}").exists()


def test_fetch_names_the_file_from_content_disposition(served, tmp_path):
    document_id = served.add(b"bonjour\n", "r\u00e9sum\u00e9 d'\u00e9t\u00e9.txt")
    result = run_fetch(served, document_id, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r\u00e9sum\u00e9 d'\u00e9t\u00e9.txt").read_bytes() == b"bonjour\n"


def test_fetch_saves_percent_and_backslash_names_as_meant(served, tmp_path):
    # A "%41" is not decoded to "A", and a backslash (a folder separator on Windows) is "_".
    document_id = served.add(b"exact\n", "100%41 back\\slash.txt")
    result = run_fetch(served, document_id, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["100%41 back_slash.txt"]


def test_fetch_resumes_a_partial_file_with_a_range(served, document, tmp_path):
    target = tmp_path / "partial.txt"
    target.write_bytes(DATA[: 2 * MIB + 17])
    before = served.reads()
    result = run_fetch(served, document, "-o", str(target), cwd=tmp_path)
    after = served.reads()
    assert result.returncode == 0, result.stderr
    assert sha256(target.read_bytes()) == sha256(DATA)
    assert f"resumed at byte {2 * MIB + 17}" in result.stderr
    assert after["ranged_reads"] - before["ranged_reads"] == 1
    assert after["bytes_read"] - before["bytes_read"] == SIZE - (2 * MIB + 17)


def test_fetch_resumes_into_the_default_file_name(served, document, tmp_path):
    (tmp_path / "report.txt").write_bytes(DATA[:MIB])
    result = run_fetch(served, document, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sha256((tmp_path / "report.txt").read_bytes()) == sha256(DATA)
    assert f"resumed at byte {MIB}" in result.stderr


def test_fetch_restarts_when_the_document_changed(served, document, tmp_path):
    """The saved validator goes out as If-Range: a stale one gets the whole new body."""
    target = tmp_path / "stale.txt"
    target.write_bytes(b"x" * MIB)  # bytes of some older version
    (tmp_path / f"stale.txt{RESUME_SUFFIX}").write_text('{"validator": "\\"old-version\\""}')
    result = run_fetch(served, document, "-o", str(target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sha256(target.read_bytes()) == sha256(DATA)
    assert "resumed" not in result.stderr


def test_fetch_restarts_when_the_partial_file_is_too_long(served, document, tmp_path):
    target = tmp_path / "long.txt"
    target.write_bytes(DATA + b"trailing junk")
    result = run_fetch(served, document, "-o", str(target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sha256(target.read_bytes()) == sha256(DATA)


def test_fetch_of_a_complete_file_reads_nothing(served, document, tmp_path):
    target = tmp_path / "done.txt"
    target.write_bytes(DATA)
    before = served.reads()
    result = run_fetch(served, document, "-o", str(target), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stderr
    assert served.reads()["object_reads"] == before["object_reads"]
    assert sha256(target.read_bytes()) == sha256(DATA)


def test_killed_fetch_resumes_to_an_identical_file(served, tmp_path):
    data = random_bytes(32 * MIB, seed=22)
    document_id = served.add(data, "big.txt")
    target = tmp_path / "big.txt"
    process = subprocess.Popen(
        fetch_command(served, document_id, "-o", str(target), "--limit-rate", "8M"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env={**clean_env(), "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while not (target.exists() and target.stat().st_size >= 4 * MIB):
            assert process.poll() is None, "fetch ended before it could be interrupted"
            assert time.monotonic() < deadline, "fetch made no progress"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    partial = target.stat().st_size
    assert 4 * MIB <= partial < len(data)
    assert (tmp_path / f"big.txt{RESUME_SUFFIX}").exists()  # the validator for If-Range

    before = served.reads()
    result = run_fetch(served, document_id, "-o", str(target), cwd=tmp_path)
    after = served.reads()
    assert result.returncode == 0, result.stderr
    assert sha256(target.read_bytes()) == sha256(data)
    assert f"resumed at byte {partial}" in result.stderr
    assert after["bytes_read"] - before["bytes_read"] == len(data) - partial
    assert not (tmp_path / f"big.txt{RESUME_SUFFIX}").exists()


def test_fetch_presigned_with_client_credentials(served, document, tmp_path):
    target = tmp_path / "presigned.txt"
    target.write_bytes(DATA[:12345])
    result = run_fetch(
        served,
        document,
        "-o",
        str(target),
        "--presigned",
        "--client-id",
        CLIENT_ID,
        "--client-secret",
        CLIENT_SECRET,
        cwd=tmp_path,
        token=False,
    )
    assert result.returncode == 0, result.stderr
    assert sha256(target.read_bytes()) == sha256(DATA)
    assert "resumed at byte 12345" in result.stderr


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["no-such-document"], True, "docproxy fetch: Document not found (HTTP 437)"),
        (
            ["no-such-document", "--presigned"],
            True,
            "docproxy fetch: Document not found (HTTP 437)",
        ),
        (["x", "--token", "not-a-token"], False, "docproxy fetch: UNAUTHORIZED (HTTP 403)"),
        (
            ["x", "--client-id", CLIENT_ID, "--client-secret", "wrong"],
            False,
            "docproxy fetch: token request refused: UNAUTHORIZED (HTTP 403)",
        ),
        (["x"], False, "docproxy fetch: no credentials"),
    ],
    ids=["not-found", "presigned-not-found", "bad-token", "bad-secret", "no-credentials"],
)
def test_fetch_errors_exit_non_zero_with_the_message(served, tmp_path, args, token, message):
    result = run_fetch(served, *args, cwd=tmp_path, token=token)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written for a refused download


def fetch_from(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "fetch", "doc", "--url", url, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean_env(), "PYTHONPATH": str(REPO)},
        timeout=60,
    )


def test_fetch_from_nowhere_names_the_url_and_the_reason(tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = fetch_from(nowhere, tmp_path, "--token", "t")
    assert result.returncode == 1
    assert (
        result.stderr
        == f"docproxy fetch: cannot reach {nowhere}/download/doc: connection refused\n"
    )
    result = fetch_from(nowhere, tmp_path, "--client-id", "c", "--client-secret", "s")
    assert result.stderr == (
        f"docproxy fetch: cannot reach {nowhere}/generate-client-auth-token: connection refused\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["nonsense", "ftp://example.com", "http://[::1"])
def test_fetch_refuses_a_base_url_that_is_no_http_url(tmp_path, url):
    result = fetch_from(url, tmp_path, "--token", "t")
    assert result.returncode == 1
    assert result.stderr.startswith(f"docproxy fetch: base URL {url!r}: "), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_fetch_reports_a_download_cut_by_the_server(breakable, tmp_path):
    served, cut = breakable
    data = random_bytes(32 * MIB, seed=23)
    document_id = served.add(data, "cut.txt")
    target = tmp_path / "cut.txt"
    process = subprocess.Popen(
        fetch_command(served, document_id, "-o", str(target), "--limit-rate", "8M"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**clean_env(), "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 60
    while not (target.exists() and target.stat().st_size >= 2 * MIB):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    cut(document_id, data[: 16 * MIB])  # the object shrinks under the running download
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "run the same command again to resume" in stderr
    assert target.stat().st_size < 32 * MIB
