"""Configuration: TOML plus environment, one clear line naming the key on error."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from channels.catalog import load_settings
from hosting.settings import ConfigError, parse_codec_key

GOOD_KEY = base64.b64encode(b"a" * 32).decode()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "switchboard.toml"
    path.write_text(text)
    return str(path)


def test_toml_is_read_and_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        f'[temporal]\naddress = "10.0.0.1:7233"\ntask_queue = "q1"\n'
        f'[security]\nsigning_key = "{GOOD_KEY}"\ncodec_keys = ["k1:{GOOD_KEY}"]\n'
        f'[agent]\nkind = "echo"\ndelay_ms = 5\n',
    )
    monkeypatch.setenv("SWITCHBOARD_TEMPORAL__TASK_QUEUE", "from-env")
    monkeypatch.setenv("SWITCHBOARD_AGENT__DELAY_MS", "7")
    settings = load_settings(path)
    assert settings.temporal.address == "10.0.0.1:7233"
    assert settings.temporal.task_queue == "from-env"
    assert settings.agent.delay_ms == 7
    assert settings.security.codec_key_pairs() == [("k1", b"a" * 32)]
    settings.require_keys()


def test_defaults_follow_the_design_contract(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    assert settings.temporal.address == "127.0.0.1:7233"
    assert settings.temporal.namespace == "default"
    assert settings.temporal.task_queue == "switchboard"
    assert (settings.gateway.host, settings.gateway.port) == ("127.0.0.1", 8080)
    assert settings.agent.kind == "echo"
    assert settings.authorization.default == "allow"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[gateway]\nport = "eighty"\n', "gateway.port"),
        ('[agent]\nkind = "magic"\n', "agent.kind"),
        ('[security]\nsigning_key = "!!!"\n', "security.signing_key"),
        ('[security]\ncodec_keys = ["nokeyid"]\n', "security.codec_keys"),
        (f'[security]\ncodec_keys = ["k1:{base64.b64encode(b"short").decode()}"]\n', "32 bytes"),
        ('[channels.webhook]\nsecret = "whsec_???"\n', "channels.webhook.secret"),
        ('[temporal]\nadress = "typo"\n', "temporal.adress"),
        ("[gateway\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_settings(write(tmp_path, text))


def test_missing_keys_are_refused_outside_dev(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""))
    with pytest.raises(ConfigError, match="security.signing_key"):
        settings.require_keys()


def test_missing_config_file_named_explicitly_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "nope.toml"))


def test_codec_key_parsing() -> None:
    assert parse_codec_key(f"key-2024_a:{GOOD_KEY}") == ("key-2024_a", b"a" * 32)
    for bad in ("", ":abc", "k1", f"k/1:{GOOD_KEY}", "k1:not-base64!"):
        with pytest.raises(ValueError):
            parse_codec_key(bad)


@pytest.mark.parametrize("program", ["worker.py", "gateway.py"])
def test_processes_exit_with_one_clear_line_on_bad_config(tmp_path: Path, program: str) -> None:
    path = write(tmp_path, "[gateway]\nport = -1\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "SWITCHBOARD_CONFIG": path}
    proc = subprocess.run(
        [sys.executable, str(root / program)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "configuration error: gateway.port" in lines[0]
    assert "Traceback" not in proc.stderr
