from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_server
from tests.deploy.containers import debian_mirror, make_slim_rootfs, missing_tools


@pytest.fixture(scope="session")
def debian_rootfs() -> Iterator[Path]:
    """A slim Debian bookworm root filesystem, made once per test session and removed after
    it (about 80 MB, never kept between runs)."""
    reason = missing_tools()
    if reason is not None:
        require_server("buildah, podman and debootstrap", reason)
    folder = Path(tempfile.mkdtemp(prefix="docproxy-rootfs-"))
    try:
        yield make_slim_rootfs(folder / "rootfs", debian_mirror())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
