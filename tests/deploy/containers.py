"""The container image, built and run with buildah in an image store of the test's own.

No container registry is reachable here, so the base image is made from Debian's archive with
debootstrap, slimmed the way the official ``-slim`` images are, and imported under the exact
name the Dockerfile's ``FROM`` gives. ``podman run`` cannot set its rlimits on these machines;
``buildah run --isolation chroot --network host`` runs the image's command instead, in the
image's filesystem, on the host's loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.harness import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
TOOLS = ("buildah", "podman", "debootstrap")

# What the official debian:*-slim images leave out (debuerreotype's slimify list), so the base
# made here weighs what the registry's does (about 78 MB) and the size check means the same.
SLIM_DPKG_CONFIG = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
"""
SLIM_APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""  # noqa: E501 - apt's own syntax, one statement per line
SLIM_EXCLUDED = ("groff", "info", "linda", "lintian/overrides", "locale", "man")
# Certificate authorities this machine added to its trust store (Debian's place for them). When
# the archives are reached through a TLS-inspecting proxy, pip inside the build trusts it only
# with these, as an organisation's base image carries its own CAs.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")


def missing_tools() -> str | None:
    """Why the image cannot be built here, or None."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install -y {' '.join(absent)})"
    if os.geteuid() != 0:
        return "debootstrap and buildah's chroot isolation need root"
    return None


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's apt uses for bookworm (deb822 or one-line sources)."""
    entries: list[tuple[list[str], list[str]]] = []  # (URIs, suites)
    for path in sorted(apt_dir.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
            if fields.get("Enabled", "yes").lower() != "no" and "deb" in fields.get("Types", ""):
                entries.append((fields.get("URIs", "").split(), fields.get("Suites", "").split()))
    for path in [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()  # drop [signed-by=...] options
                if len(words) >= 3 and words[0] == "deb":
                    entries.append(([words[1]], [words[2]]))
    for uris, suites in entries:
        if "bookworm" in suites and uris and uris[0].startswith(("http://", "https://")):
            return uris[0]
    raise RuntimeError(f"no Debian bookworm archive in {apt_dir}/sources.list*")


def base_images(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The images the Dockerfile's stages start from (not its own stage names)."""
    bases: list[str] = []
    stages: set[str] = set()
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            image, stage = match.groups()
            if image.lower() not in stages and image not in bases:
                bases.append(image)
            if stage:
                stages.add(stage.lower())
    return bases


def make_slim_rootfs(target: Path, mirror: str) -> Path:
    """debootstrap a minimal bookworm into ``target``, then slim it like debian:bookworm-slim."""
    subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(target), mirror],
        check=True,
        capture_output=True,
        timeout=900,
    )
    (target / "etc/dpkg/dpkg.cfg.d/docker").write_text(SLIM_DPKG_CONFIG)
    (target / "etc/apt/apt.conf.d/docker-clean").write_text(SLIM_APT_CLEAN)
    for folder in SLIM_EXCLUDED:
        for child in (target / "usr/share" / folder).glob("*"):
            remove(child)
    for path in sorted((target / "usr/share/doc").rglob("*"), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        elif not path.is_dir() and path.name != "copyright":
            path.unlink()
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"):
        for path in target.glob(pattern):
            remove(path)
    for certificate in LOCAL_CA_DIR.glob("*.crt"):
        destination = target / "usr/local/share/ca-certificates" / certificate.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(certificate, destination)
    return target


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


class ImageStore:
    """buildah and podman with their images and containers under one temporary folder."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="docproxy-images-"))
        self.options = [
            "--root",
            str(self.folder / "storage"),
            "--runroot",
            str(self.folder / "run"),
        ]
        self.containers: list[str] = []

    def buildah(self, *args: str, timeout: float = 120) -> str:
        return self._run("buildah", args, timeout)

    def podman(self, *args: str, timeout: float = 120) -> str:
        return self._run("podman", args, timeout)

    def _run(self, tool: str, args: Iterable[str], timeout: float) -> str:
        command = [tool, *self.options, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(command[:4])}... failed:\n{result.stderr[-4000:]}")
        return result.stdout

    def import_rootfs(self, rootfs: Path, name: str) -> None:
        archive = self.folder / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
        try:
            self.podman("import", str(archive), name)
        finally:
            archive.unlink()

    def build(self, dockerfile: Path, context: Path, tag: str, log: Path) -> float:
        """``buildah bud`` the Dockerfile unchanged; the seconds it took. ``--format docker``
        keeps the HEALTHCHECK (OCI image configs have no field for it)."""
        started = time.monotonic()
        command = ["buildah", *self.options, "bud", "--isolation", "chroot", "--format", "docker"]
        command += ["--pull=never", "-f", str(dockerfile), "-t", tag, str(context)]
        with log.open("wb") as output:
            result = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, timeout=1800)
        if result.returncode != 0:
            raise AssertionError(f"the image did not build:\n{log.read_text()[-6000:]}")
        return time.monotonic() - started

    def inspect(self, image: str) -> dict[str, Any]:
        return json.loads(self.buildah("inspect", "--type", "image", image))

    def size(self, image: str) -> int:
        """The image's size in bytes, as ``podman image ls`` reports it (uncompressed)."""
        return int(self.podman("image", "inspect", "--format", "{{.Size}}", image).strip())

    def container(self, image: str) -> str:
        name = self.buildah("from", "--pull=never", image).strip()
        self.containers.append(name)
        return name

    def run_command(
        self, container: str, command: Iterable[str], env: Mapping[str, str] | None = None
    ) -> list[str]:
        """The ``buildah run`` command line that runs ``command`` in the container."""
        line = ["buildah", *self.options, "run", "--isolation", "chroot", "--network", "host"]
        for name, value in (env or {}).items():
            line += ["--env", f"{name}={value}"]
        return [*line, container, "--", *command]

    def run(
        self,
        container: str,
        *command: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.run_command(container, command, env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(
        self, container: str, command: Iterable[str], env: Mapping[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        """Run ``command`` in the background (stop it with ``stop``); output goes to ``log``."""
        with log.open("ab") as output:
            return subprocess.Popen(
                self.run_command(container, command, env),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so stop() reaches buildah and what it started
            )

    @staticmethod
    def stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def destroy(self) -> None:
        """Remove every container and image, then the store itself."""
        for tool_args in (["rm", "--all"], ["rmi", "--all", "--force"]):
            subprocess.run(["buildah", *self.options, *tool_args], capture_output=True, timeout=300)
        # An overlay left mounted (an interrupted run) would make the folder undeletable.
        for line in Path("/proc/mounts").read_text().splitlines():
            mount_point = line.split()[1]
            if mount_point.startswith(str(self.folder)):
                subprocess.run(["umount", "-l", mount_point], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)
