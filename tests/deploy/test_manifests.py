"""deploy/: the container's config and the Kubernetes manifests are valid, use only real config
keys, and keep docproxy locked down."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_server
from tests.harness import REPO
from tests.sql_servers import POSTGRES_URL, ScratchDatabase, reachable

K8S_VERSION = "1.33.0"  # the Kubernetes version the manifests are validated against
KUBERNETES = REPO / "deploy" / "kubernetes"
CONTAINER_CONFIG = REPO / "deploy" / "config.yaml"
# The variables the container's config reads, with no default.
CONTAINER_KEYS = (
    "DOCPROXY_TOKEN_KEY",
    "DOCPROXY_LINK_KEY",
    "DOCPROXY_CLIENT_ID",
    "DOCPROXY_CLIENT_SECRET",
)


def resources() -> list[tuple[str, dict[str, Any]]]:
    """(file, resource) for every document of every manifest under deploy/kubernetes."""
    found = []
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        for resource in yaml.safe_load_all(path.read_text()):
            if resource:
                found.append((str(path.relative_to(REPO)), resource))
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    matches = [r for _, r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def check_config(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``docproxy check-config`` with exactly ``env`` for docproxy's own variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DOCPROXY_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**clean, **env},
        timeout=60,
    )


def image_user() -> tuple[int, int]:
    """The numeric USER the Dockerfile's final stage runs as."""
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", (REPO / "deploy/Dockerfile").read_text(), re.M)
    assert users, "deploy/Dockerfile has no numeric USER uid:gid"
    return int(users[-1][0]), int(users[-1][1])


def test_every_manifest_is_valid_for_the_pinned_kubernetes_strictly():
    from kubernetes_validate import validate

    found = resources()
    for path, document in found:
        assert validate(document, K8S_VERSION, strict=True), path
    kinds = sorted(f"{r['kind']}/{r['metadata']['name']}" for _, r in found)
    assert kinds == [
        "ConfigMap/docproxy-config",
        "Deployment/docproxy",
        "Deployment/your-application",
        "PodDisruptionBudget/docproxy",
        "Secret/docproxy-secrets",
        "Service/docproxy",
    ]


def test_a_kubernetes_validate_failure_is_caught():
    """The validation is strict: a misspelt field fails (so the test above can fail)."""
    from kubernetes_validate import ValidationError, validate

    deployment = resource("Deployment", "docproxy")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFileSystem"] = True  # capital S: no such field
    with pytest.raises(ValidationError, match="readOnlyRootFileSystem"):
        validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", ["docproxy", "your-application"])
def test_the_docproxy_container_is_locked_down_and_probed(name):
    deployment = resource("Deployment", name)
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    spec = pod["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "docproxy"]
    security = {**spec.get("securityContext", {}), **container["securityContext"]}
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == image_user()
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False

    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"docproxy": 8080}
    # Liveness restarts a process that no longer serves; readiness takes a pod whose catalog
    # or store is down out of the Service without restarting it.
    paths = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in paths.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "docproxy"}, probe
    for bound in ("requests", "limits"):
        assert set(container["resources"][bound]) == {"cpu", "memory"}

    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
    assert mounts["/etc/docproxy"]["configMap"] == {"name": "docproxy-config"}
    assert "emptyDir" in mounts["/tmp"]
    assert container["envFrom"] == [{"secretRef": {"name": "docproxy-secrets"}}]


@pytest.mark.parametrize("name", ["docproxy", "your-application"])
def test_the_pod_waits_for_the_drain(name):
    """Kubernetes kills a pod terminationGracePeriodSeconds after SIGTERM: docproxy must have
    had its whole server.shutdown_timeout by then, and a few seconds to exit."""
    config = yaml.safe_load(resource("ConfigMap", "docproxy-config")["data"]["config.yaml"])
    shutdown_timeout = config["server"]["shutdown_timeout"]
    spec = resource("Deployment", name)["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == shutdown_timeout + 5


def test_the_service_and_the_budget_select_the_shared_replicas():
    labels = resource("Deployment", "docproxy")["spec"]["template"]["metadata"]["labels"]
    service = resource("Service", "docproxy")["spec"]
    assert service["selector"].items() <= labels.items()
    assert [port["targetPort"] for port in service["ports"]] == ["docproxy"]
    budget = resource("PodDisruptionBudget", "docproxy")["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] == 1


def test_the_application_reads_its_client_from_the_secret():
    secret = resource("Secret", "docproxy-secrets")["stringData"]
    (application,) = [
        c
        for c in resource("Deployment", "your-application")["spec"]["template"]["spec"][
            "containers"
        ]
        if c["name"] != "docproxy"
    ]
    references = [
        variable["valueFrom"]["secretKeyRef"]
        for variable in application["env"]
        if "valueFrom" in variable
    ]
    assert references and all(ref["name"] == "docproxy-secrets" for ref in references)
    assert {ref["key"] for ref in references} <= set(secret)


@pytest.fixture
def mapped_database(tmp_path):
    """A PostgreSQL database holding the table the ConfigMap's config maps."""
    problem = reachable(POSTGRES_URL)
    if problem is not None:
        require_server("PostgreSQL", problem)
    database = ScratchDatabase("postgresql", tmp_path).create()
    database.run(
        "CREATE TABLE documents (id text PRIMARY KEY, storage_key text, file_name text,"
        " mime_type text, tenant text, deleted_at timestamptz)"
    )
    yield database
    database.drop()


def test_the_configmap_config_passes_check_config_with_the_secrets_variables(
    mapped_database, tmp_path
):
    config_text = resource("ConfigMap", "docproxy-config")["data"]["config.yaml"]
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    secret = resource("Secret", "docproxy-secrets")["stringData"]
    # The config reads nothing the Secret does not provide.
    assert set(re.findall(r"\$\{(\w+)", config_text)) <= set(secret)
    env = {name: secrets.token_hex(32) for name in secret}
    env["DOCPROXY_CATALOG_URL"] = mapped_database.url  # the Secret's database, reachable here
    result = check_config(config, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{config}: OK (backends: documents (s3); default: documents)",
        "catalog: mapping matches the live database",
    ]


def test_the_placeholder_secret_is_refused(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(resource("ConfigMap", "docproxy-config")["data"]["config.yaml"])
    result = check_config(config, dict(resource("Secret", "docproxy-secrets")["stringData"]))
    assert result.returncode == 2, result.stdout
    assert "auth.signing_key: must be at least 16 bytes long" in result.stderr
    assert "presign.signing_key: must be at least 16 bytes long" in result.stderr


def test_the_container_config_reads_its_keys_from_the_environment_without_defaults():
    env = {name: secrets.token_hex(32) for name in CONTAINER_KEYS}
    result = check_config(CONTAINER_CONFIG, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{CONTAINER_CONFIG}: OK (backends: local (file)")

    result = check_config(CONTAINER_CONFIG, {})
    assert result.returncode == 2
    for name in CONTAINER_KEYS:
        assert f"environment variable {name} is not set" in result.stderr
