"""The Kubernetes example (deploy/kubernetes) agrees with the code and with Kubernetes' own
schemas; no cluster is needed to check this."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from channels.catalog import load_settings
from tests.test_docker import DOCKER, ROOT, dockerfile_stages, gateway_routes, setting_path

K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = K8S / "kustomization.yaml"
# The oldest Kubernetes release the manifests are meant for (policy/v1 PDBs, seccompProfile).
KUBERNETES_VERSION = "1.30"
KEY = base64.b64encode(b"d" * 32).decode()


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(KUSTOMIZATION.read_text())
    return data


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc is not None:
                out.append((name, doc))
    return out


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def container(deployment: str) -> dict[str, Any]:
    containers = find("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    assert numbers, f"no container port named {port}"
    return int(numbers[0])


def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The settings a pod gets: the ConfigMap's switchboard.toml plus the Secret's variables
    (placeholder values replaced by valid ones of the same shape)."""
    toml = find("ConfigMap", "switchboard-config")["data"]["switchboard.toml"]
    path = tmp_path / "switchboard.toml"
    path.write_text(toml)
    valid = {
        "SWITCHBOARD_SECURITY__SIGNING_KEY": KEY,
        "SWITCHBOARD_SECURITY__IDENTITY_KEY": KEY,
        "SWITCHBOARD_SECURITY__CODEC_KEYS": f'["prod1:{KEY}"]',
        "SWITCHBOARD_SECURITY__CODEC_SUPPORT_TOKENS": '["support-token"]',
        "SWITCHBOARD_SECURITY__CODEC_ADMIN_TOKENS": '["admin-token"]',
        "SWITCHBOARD_GATEWAY__METRICS_TOKEN": "metrics-token",
    }
    secret = find("Secret", "switchboard-secrets")["stringData"]
    assert set(secret) == set(valid)
    for name, value in valid.items():
        monkeypatch.setenv(name, value)
    return load_settings(str(path))


def test_kustomization_lists_every_manifest() -> None:
    listed = kustomization()["resources"]
    present = sorted(p.name for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)
    assert sorted(listed) == present
    for name, doc in manifests():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), name


def test_manifests_match_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kinds = set()
    for _, doc in manifests():
        # strict: a misspelt or misplaced field is an error, not silently ignored.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        kinds.add(doc["kind"])
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Ingress",
    } <= kinds


def test_schema_validation_catches_a_mistake() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = find("Deployment", "switchboard-gateway")
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_images_are_pinned_to_the_project_version() -> None:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version
    rewrites = {i["name"]: i for i in kustomization()["images"]}
    assert rewrites["switchboard"]["newTag"] == version.group(1)
    for name, doc in manifests():
        if doc["kind"] != "Deployment":
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            # The image name is a placeholder that kustomization.yaml pins.
            assert c["image"] in rewrites, f"{name}: {c['image']} is not pinned"


def test_gateway_probes_and_ports_match_the_gateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = configured(tmp_path, monkeypatch)
    gateway = container("switchboard-gateway")
    assert gateway["command"] == ["python", "gateway.py"]
    routes = gateway_routes()
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = gateway[probe]["httpGet"]
        assert get["path"] in routes
        assert port_number(gateway, get["port"]) == settings.gateway.port
    assert settings.gateway.host == "0.0.0.0"
    assert settings.gateway.public_url.startswith("https://")
    annotations = find("Deployment", "switchboard-gateway")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotations["prometheus.io/path"] in routes
    assert int(annotations["prometheus.io/port"]) == settings.gateway.port


def test_worker_probes_its_metrics_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configured(tmp_path, monkeypatch)
    worker = container("switchboard-worker")
    assert worker["command"] == ["python", "worker.py"]
    host, _, port = settings.worker.metrics_address.rpartition(":")
    assert host == "0.0.0.0", "the kubelet probes the pod's address, not loopback"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = worker[probe]["httpGet"]
        assert get["path"] == "/metrics"
        assert port_number(worker, get["port"]) == int(port)
    annotations = find("Deployment", "switchboard-worker")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert int(annotations["prometheus.io/port"]) == int(port)


def test_service_and_ingress_reach_the_gateway_pods() -> None:
    deployment = find("Deployment", "switchboard-gateway")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = find("Service", "switchboard-gateway")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    gateway = container("switchboard-gateway")
    for port in service["spec"]["ports"]:
        port_number(gateway, port["targetPort"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for rule in find("Ingress", "switchboard-gateway")["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in service_ports


def test_configmap_loads_and_secret_names_real_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = configured(tmp_path, monkeypatch)
    settings.require_keys()
    assert settings.security.codec_key_pairs() == [("prod1", b"d" * 32)]
    assert settings.temporal.address.endswith(":7233")
    # The Web UI named by temporal.ui_url may call the codec server.
    assert settings.temporal.ui_url in settings.security.codec_cors_origins
    text = (K8S / "secret.yaml").read_text()
    names = re.findall(r"^\s*#?\s*(SWITCHBOARD_\w+):", text, re.M)
    assert "SWITCHBOARD_TEMPORAL__API_KEY" in names
    for name in names:
        setting_path(name)
    for value in find("Secret", "switchboard-secrets")["stringData"].values():
        assert "REPLACE_ME" in value, "the example Secret holds placeholders only"


def test_configmap_documents_temporal_cloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = find("ConfigMap", "switchboard-config")["data"]["switchboard.toml"]
    # Uncommenting the Temporal Cloud block gives a configuration that loads.
    cloud = re.sub(r"^(\s*)# ((address|namespace|tls\w*) = )", r"\1\2", toml, flags=re.M)
    lines = [line for line in cloud.splitlines() if not line.startswith('address = "temporal-')]
    lines = [line for line in lines if line != 'namespace = "default"']
    path = tmp_path / "cloud.toml"
    path.write_text("\n".join(lines))
    monkeypatch.setenv("SWITCHBOARD_TEMPORAL__API_KEY", "cloud-key")
    settings = load_settings(str(path))
    assert settings.temporal.tls is True
    assert settings.temporal.address.endswith(".tmprl.cloud:7233")
    assert str(settings.temporal.tls_client_cert_path).startswith("/etc/switchboard/tls/")
    assert settings.temporal.api_key is not None


def test_config_is_mounted_where_the_image_looks() -> None:
    env = " ".join(line for line in dockerfile_stages()[-1] if line.startswith("ENV "))
    match = re.search(r"SWITCHBOARD_CONFIG=(\S+)", env)
    assert match
    config = Path(match.group(1))
    for deployment in ("switchboard-gateway", "switchboard-worker"):
        spec = find("Deployment", deployment)["spec"]["template"]["spec"]
        c = spec["containers"][0]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        config_mount = [m for m in mounts.values() if m["mountPath"] == str(config.parent)]
        assert config_mount, f"{deployment}: nothing mounted at {config.parent}"
        assert config_mount[0]["readOnly"] is True
        assert volumes[config_mount[0]["name"]]["configMap"]["name"] == "switchboard-config"
        assert config.name in find("ConfigMap", "switchboard-config")["data"]
        assert c["envFrom"] == [{"secretRef": {"name": "switchboard-secrets"}}]
        for m in mounts.values():
            assert m["name"] in volumes


def test_pods_run_unprivileged_on_a_read_only_root() -> None:
    users = [line.split()[1] for line in dockerfile_stages()[-1] if line.startswith("USER ")]
    uid, _, gid = users[-1].partition(":")
    for deployment in ("switchboard-gateway", "switchboard-worker"):
        spec = find("Deployment", deployment)["spec"]["template"]["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == int(uid) and pod["runAsGroup"] == int(gid)
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            # Something writable for libraries that want a temporary directory.
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    namespace = find("Namespace", "switchboard")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert kustomization()["namespace"] == "switchboard"


def test_every_container_has_requests_and_limits() -> None:
    for deployment in ("switchboard-gateway", "switchboard-worker"):
        for c in find("Deployment", deployment)["spec"]["template"]["spec"]["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), deployment
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), deployment


def test_disruption_budgets_cover_both_deployments() -> None:
    budgets = [d for _, d in manifests() if d["kind"] == "PodDisruptionBudget"]
    for deployment in ("switchboard-gateway", "switchboard-worker"):
        spec = find("Deployment", deployment)["spec"]
        labels = spec["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, deployment
        assert matching[0]["spec"]["minAvailable"] < spec["replicas"], "a drain must be possible"
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_shutdown_fits_the_grace_period() -> None:
    text = (ROOT / "gateway.py").read_text() + (ROOT / "worker.py").read_text()
    drains = [int(s) for s in re.findall(r"shutdown_timeout=(?:timedelta\(seconds=)?(\d+)", text)]
    assert drains
    for deployment in ("switchboard-gateway", "switchboard-worker"):
        spec = find("Deployment", deployment)["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] > max(drains) + 5


def test_compose_and_kubernetes_give_the_same_image_version() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    tag = compose["services"]["gateway"]["image"].rpartition(":")[2]
    assert {i["name"]: i["newTag"] for i in kustomization()["images"]}["switchboard"] == tag
