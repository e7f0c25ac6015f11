"""The deployment files agree with the code (no Docker engine is needed to check this)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import yaml

from channels.catalog import load_settings

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def test_compose_has_the_whole_deployment() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgresql", "temporal", "temporal-ui", "worker", "gateway"} <= set(services)
    assert services["worker"]["command"] == ["python", "worker.py"]
    assert services["gateway"]["command"] == ["python", "gateway.py"]
    assert services["gateway"]["depends_on"]["temporal"]["condition"] == "service_healthy"


def test_compose_environment_names_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    key = base64.b64encode(b"k" * 32).decode()
    values = {
        "SWITCHBOARD_SECURITY__SIGNING_KEY": key,
        "SWITCHBOARD_SECURITY__CODEC_KEYS": f'["prod1:{key}"]',
    }
    env = {
        **compose["services"]["worker"]["environment"],
        **compose["services"]["gateway"]["environment"],
    }
    for name, value in env.items():
        assert name.startswith("SWITCHBOARD_")
        monkeypatch.setenv(name, values.get(name, str(value)))
    settings = load_settings(str(DOCKER / "switchboard.toml"))
    settings.require_keys()
    assert settings.temporal.address == "temporal:7233"
    assert settings.gateway.host == "0.0.0.0"
    assert settings.security.codec_key_pairs() == [("prod1", b"k" * 32)]


def test_dockerfile_copies_only_what_exists() -> None:
    root = DOCKER.parent
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        match = re.match(r"COPY (?!--from)(.+) \S+$", line)
        if match:
            for src in match.group(1).split():
                assert (root / src).exists(), src
