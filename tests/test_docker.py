"""The deployment files agree with the code (no Docker engine is needed to check this)."""

from __future__ import annotations

import base64
import json
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from channels.catalog import Settings, load_settings
from hosting import search_attributes

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
KEY = base64.b64encode(b"k" * 32).decode()

# An exact release: digits and dots, optionally a variant suffix (`-slim-bookworm`).
PINNED_TAG = re.compile(r"^\d+(\.\d+)+(-[a-z0-9.-]+)?$")
# Services that run once and exit; every other one runs for good.
ONE_SHOT = {"temporal-schema", "temporal-namespace"}

# Values for the variables docker/.env must provide (the compose file refuses to start without).
DOTENV = {
    "POSTGRES_PASSWORD": "pg-secret",
    "SWITCHBOARD_SIGNING_KEY": KEY,
    "SWITCHBOARD_CODEC_KEYS": f'["prod1:{KEY}"]',
}


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return data


def interpolate(value: object, env: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}` and `$$`."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        present = env.get(name)
        if op in (":-", "-"):
            return present if present or (op == "-" and present is not None) else arg
        if op in (":?", "?"):
            if not present:
                raise KeyError(f"{name}: {arg}")
            return present
        return present or ""

    pattern = r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    return re.sub(pattern, one, str(value))


def dotenv_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value
    return out


def setting_path(name: str) -> list[str]:
    """The settings field an `SWITCHBOARD_SECTION__KEY` variable sets; fails on any other."""
    assert name.startswith("SWITCHBOARD_"), name
    parts = name.removeprefix("SWITCHBOARD_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        assert part in model.model_fields, f"{name}: {part!r} is not a setting of {model.__name__}"
        if i == len(parts) - 1:
            break
        annotation = model.model_fields[part].annotation
        candidates = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        assert nested, f"{name}: {part!r} is a value, not a section"
        model = nested[0]
    return parts


def _is_union(annotation: object) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def gateway_routes() -> set[str]:
    """Every path the gateway serves, with the configuration docker/ and deploy/ give it."""
    from gateway import build_app

    settings = load_settings(
        str(DOCKER / "switchboard.toml"),
        security={"signing_key": KEY, "codec_keys": [f"prod1:{KEY}"]},
    )
    app = build_app(settings)
    return {resource.canonical for resource in app.router.resources()}


def image_tag(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    return name, tag


def test_compose_has_the_whole_deployment() -> None:
    services = compose()["services"]
    assert {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-namespace",
        "temporal-ui",
        "worker",
        "gateway",
    } <= set(services)
    assert services["worker"]["command"] == ["python", "worker.py"]
    assert services["gateway"]["command"] == ["python", "gateway.py"]
    assert services["gateway"]["depends_on"]["temporal"]["condition"] == "service_healthy"
    for name in ("worker", "gateway"):
        assert services[name]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert services[name]["volumes"] == [
            "./switchboard.toml:/etc/switchboard/switchboard.toml:ro"
        ]


def test_compose_uses_the_production_temporal_images() -> None:
    services = compose()["services"]
    assert not [n for n, s in services.items() if "auto-setup" in s["image"]], "dev only"
    server, server_tag = image_tag(services["temporal"]["image"])
    assert server == "temporalio/server"
    for job in ONE_SHOT:
        tools, tools_tag = image_tag(services[job]["image"])
        assert tools == "temporalio/admin-tools"
        assert tools_tag == server_tag, "admin-tools must match the server's schema versions"
    assert image_tag(services["temporal-ui"]["image"])[0] == "temporalio/ui"


@pytest.mark.parametrize("job", sorted(ONE_SHOT))
def test_one_shot_jobs_run_scripts_that_exist(job: str) -> None:
    service = compose()["services"][job]
    mounts = dict(v.removesuffix(":ro").split(":", 1)[::-1] for v in service["volumes"])
    script = service["command"][-1]
    assert script in mounts, f"{job} runs {script}, which is not mounted"
    assert (DOCKER / mounts[script]).is_file()
    assert service["entrypoint"] == ["/bin/sh"]


def test_schema_job_sets_up_both_stores_on_postgresql() -> None:
    services = compose()["services"]
    script = (DOCKER / "temporal" / "setup-schema.sh").read_text()
    assert "temporal-sql-tool --plugin postgres12" in script
    for step in ("create", "setup-schema -v 0.0", "update-schema -d"):
        assert f'--db "$db" {step}' in script
    assert "temporal:temporal temporal_visibility:visibility" in script
    assert "/etc/temporal/schema/postgresql/v12" in script
    env = services["temporal-schema"]["environment"]
    server_env = services["temporal"]["environment"]
    assert env["DB"] == server_env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] == server_env["POSTGRES_SEEDS"] == "postgresql"
    assert env["POSTGRES_USER"] == server_env["POSTGRES_USER"]
    assert (
        interpolate(env["SQL_PASSWORD"], DOTENV)
        == interpolate(server_env["POSTGRES_PWD"], DOTENV)
        == interpolate(services["postgresql"]["environment"]["POSTGRES_PASSWORD"], DOTENV)
    )


def test_namespace_job_creates_every_search_attribute() -> None:
    script = (DOCKER / "temporal" / "create-namespace.sh").read_text()
    match = re.search(r'^SEARCH_ATTRIBUTES="([^"]*)"', script, re.MULTILINE)
    assert match
    assert match.group(1).split() == [key.name for key in search_attributes.ALL]
    services = compose()["services"]
    namespace = services["temporal-namespace"]["environment"]["NAMESPACE"]
    settings = load_settings(str(DOCKER / "switchboard.toml"))
    assert namespace == settings.temporal.namespace


def test_every_image_is_pinned() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert "image" in service, name
        _, tag = image_tag(service["image"])
        assert "$" not in service["image"], f"{name}: image chosen by a variable"
        assert tag != "latest" and PINNED_TAG.match(tag), f"{name}: {service['image']} not pinned"
    # The two Switchboard services build the image they are tagged with.
    assert services["worker"]["image"] == services["gateway"]["image"]
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version and image_tag(services["gateway"]["image"])[1] == version.group(1)


def test_compose_dependency_graph_is_consistent() -> None:
    services = compose()["services"]
    graph: dict[str, dict[str, str]] = {}
    for name, service in services.items():
        deps = service.get("depends_on", {})
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        graph[name] = {d: spec.get("condition", "service_started") for d, spec in deps.items()}
        for dep, condition in graph[name].items():
            assert dep in services, f"{name} depends on missing service {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep}'s healthcheck"
            if condition == "service_completed_successfully":
                assert dep in ONE_SHOT, f"{name} waits for {dep} to exit"
    # No cycle: a topological order exists.
    order: list[str] = []
    pending = dict(graph)
    while pending:
        ready = [n for n, deps in pending.items() if set(deps) <= set(order)]
        assert ready, f"dependency cycle among {sorted(pending)}"
        order += sorted(ready)
        for n in ready:
            del pending[n]
    assert graph["temporal-schema"] == {"postgresql": "service_healthy"}
    assert graph["temporal"]["temporal-schema"] == "service_completed_successfully"
    assert graph["temporal-namespace"]["temporal"] == "service_healthy"
    assert graph["temporal-ui"]["temporal"] == "service_healthy"
    for name in ("worker", "gateway"):
        assert graph[name]["temporal"] == "service_healthy"
        assert graph[name]["temporal-namespace"] == "service_completed_successfully"
    assert order.index("temporal-schema") < order.index("temporal") < order.index("gateway")


def test_services_have_healthchecks_restart_policies_and_resources() -> None:
    for name, service in compose()["services"].items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert {"cpus", "memory"} <= set(limits), f"{name}: no resource limits"
        if name in ONE_SHOT:
            # Retried a few times, but never restarted once it has succeeded.
            assert service["restart"].startswith("on-failure"), name
            assert "healthcheck" not in service, name
        else:
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_compose_healthchecks_probe_real_endpoints() -> None:
    services = compose()["services"]
    routes = gateway_routes()
    gateway_check = " ".join(services["gateway"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:8080(/\w+)", gateway_check)
    assert path and path.group(1) in routes
    worker_check = " ".join(services["worker"]["healthcheck"]["test"])
    port = services["worker"]["environment"]["SWITCHBOARD_WORKER__METRICS_ADDRESS"].split(":")[-1]
    assert f"http://127.0.0.1:{port}/metrics" in worker_check
    assert services["worker"]["expose"] == [port]


def test_secrets_come_from_the_environment() -> None:
    secretish = re.compile(r"PASSWORD|PWD|SECRET|TOKEN|_KEY", re.IGNORECASE)
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if secretish.search(key) and "PASS_ACCESS_TOKEN" not in key:
                assert str(value).startswith("${"), f"{name}.{key} is written in the file"
    ignored = (DOCKER / ".gitignore").read_text().split()
    assert ".env" in ignored and "switchboard.env" in ignored
    # Every variable the compose file requires is in the example docker/.env.
    required = set(re.findall(r"\$\{(\w+):\?", (DOCKER / "compose.yaml").read_text()))
    assert required == set(DOTENV)
    assert required <= set(dotenv_example())
    used = set(re.findall(r"\$\{(\w+)", (DOCKER / "compose.yaml").read_text()))
    assert set(dotenv_example()) <= used, "docker/.env.example names a variable nothing uses"


def test_compose_environment_names_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    env = {**services["worker"]["environment"], **services["gateway"]["environment"]}
    for name, value in env.items():
        assert name.startswith("SWITCHBOARD_")
        setting_path(name)
        monkeypatch.setenv(name, interpolate(value, DOTENV))
    settings = load_settings(str(DOCKER / "switchboard.toml"))
    settings.require_keys()
    assert settings.temporal.address == "temporal:7233"
    assert settings.gateway.host == "0.0.0.0"
    assert settings.security.codec_key_pairs() == [("prod1", b"k" * 32)]
    assert settings.worker.metrics_address == "0.0.0.0:9464"
    assert settings.security.codec_admin_tokens == []


def test_switchboard_env_example_names_real_settings() -> None:
    names = re.findall(
        r"^#?\s*(SWITCHBOARD_\w+)=", (DOCKER / "switchboard.env.example").read_text(), re.M
    )
    assert names
    for name in names:
        setting_path(name)
    worker = compose()["services"]["worker"]
    assert worker["env_file"] == [{"path": "./switchboard.env", "required": False}]


def test_web_ui_reaches_the_gateways_codec_server() -> None:
    services = compose()["services"]
    ui = services["temporal-ui"]["environment"]
    gateway = services["gateway"]["environment"]
    for public in ({}, {"SWITCHBOARD_PUBLIC_URL": "https://switchboard.example.com"}):
        values = {**DOTENV, **public}
        public_url = interpolate(gateway["SWITCHBOARD_GATEWAY__PUBLIC_URL"], values)
        assert interpolate(ui["TEMPORAL_CODEC_ENDPOINT"], values) == public_url + "/codec"
    assert interpolate(ui["TEMPORAL_CODEC_PASS_ACCESS_TOKEN"], {}) == "true"
    assert {"/codec/decode", "/codec/encode"} <= gateway_routes()
    # The browser's calls come from the Web UI's origin: the codec server must allow it.
    for values in ({}, {"TEMPORAL_UI_URL": "https://temporal-ui.example.com"}):
        origin = interpolate(ui["TEMPORAL_CORS_ORIGINS"], values)
        allowed = json.loads(
            interpolate(gateway["SWITCHBOARD_SECURITY__CODEC_CORS_ORIGINS"], values)
        )
        assert allowed == [origin]
        assert interpolate(gateway["SWITCHBOARD_TEMPORAL__UI_URL"], values) == origin
    assert services["temporal-ui"]["ports"] == ["8233:8080"]


def test_interpolation_helper() -> None:
    assert interpolate("${A:-x}/${B}", {"A": "1"}) == "1/"
    assert interpolate("${A:-x}", {"A": ""}) == "x"
    assert interpolate("$${A}", {"A": "1"}) == "${A}"
    with pytest.raises(KeyError):
        interpolate("${A:?missing}", {})


def dockerfile_stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for line in (DOCKER / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_copies_only_what_exists() -> None:
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        match = re.match(r"COPY (?!--from)(.+) \S+$", line)
        if match:
            for src in match.group(1).split():
                assert (ROOT / src).exists(), src


def test_dockerfile_builds_the_package_in_a_stage_and_runs_it_unprivileged() -> None:
    build, runtime = dockerfile_stages()
    bases = [stage[0].split()[1] for stage in (build, runtime)]
    assert bases[0] == bases[1], "both stages share one base image"
    repo, tag = image_tag(bases[0])
    assert repo == "python" and PINNED_TAG.match(tag), bases[0]
    assert build[0].endswith(" AS build")
    installs = [line for line in build if line.startswith("RUN pip install ")]
    assert installs == ['RUN pip install --prefix=/install ".${EXTRAS:+[$EXTRAS]}"']
    assert 'ARG EXTRAS=""' in build, "no extras unless asked for"
    assert "COPY --from=build /install /usr/local" in runtime
    # Everything the package declares is copied into the build stage.
    copied = {src for line in build if line.startswith("COPY ") for src in line.split()[1:-1]}
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {pattern.rstrip("*") for pattern in tool["packages"]["find"]["include"]}
    modules = {f"{name}.py" for name in tool["py-modules"]}
    assert packages | modules | {"pyproject.toml", "README.md"} <= copied
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1] == "10001:10001", "numeric non-root user, last"
    assert "--uid 10001" in " ".join(runtime)
    assert not any(line.startswith("USER ") for line in build)
    assert 'CMD ["python", "gateway.py"]' in runtime
    env = " ".join(line for line in runtime if line.startswith("ENV "))
    assert "SWITCHBOARD_CONFIG=/etc/switchboard/switchboard.toml" in env


def test_dockerfile_healthcheck_probes_a_gateway_route() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    match = re.search(r"HEALTHCHECK .*http://127\.0\.0\.1:(\d+)(/\w+)", text)
    assert match
    settings = load_settings(str(DOCKER / "switchboard.toml"))
    assert int(match.group(1)) == settings.gateway.port
    assert match.group(2) in gateway_routes()
