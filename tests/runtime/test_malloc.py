"""``docproxy serve`` tunes glibc malloc so streamed chunks do not fragment its memory."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import os
from proxy.runtime.malloc import tune_malloc
print(
    tune_malloc(),
    os.environ["MALLOC_ARENA_MAX"],
    os.environ["MALLOC_MMAP_THRESHOLD_"],
    os.environ["MALLOC_TRIM_THRESHOLD_"],
)
"""
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_malloc_applies_and_exports_the_settings() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "2", "4194304", "8388608"]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_an_operators_own_setting_wins() -> None:
    env = {"PATH": "/usr/bin:/bin", "MALLOC_ARENA_MAX": "4"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert done.stdout.split() == ["True", "4", "4194304", "8388608"]
