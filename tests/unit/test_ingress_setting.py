"""DOJO_INGRESS: who listens on DOJO_PORT, validated where every setting is (actors/settings.py)."""

from __future__ import annotations

import pytest

from actors.exceptions import ConfigError
from actors.settings import INGRESS_MODES, Settings


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name, value in {"DOJO_STATE_DIR": str(tmp_path), "DOJO_API_TOKEN": "a", "DOJO_WORKER_TOKEN": "w",
                        "DOJO_SECRET": "s"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DOJO_INGRESS", raising=False)
    return monkeypatch


def test_the_default_ingress_is_a_known_mode(env):
    assert Settings.from_env().ingress in INGRESS_MODES


@pytest.mark.parametrize("raw, mode", [("replica", "replica"), ("serve", "serve"), (" Replica ", "replica")])
def test_each_mode_is_read_and_travels_to_other_processes(env, raw, mode):
    env.setenv("DOJO_INGRESS", raw)
    settings = Settings.from_env()
    assert settings.ingress == mode
    assert settings.env()["DOJO_INGRESS"] == mode


def test_an_unknown_mode_says_which_ones_exist(env):
    env.setenv("DOJO_INGRESS", "proxy")
    with pytest.raises(ConfigError, match=r"DOJO_INGRESS must be replica .* or serve .*, got 'proxy'"):
        Settings.from_env()


def test_serve_replicas_must_be_at_least_one(env):
    env.setenv("DOJO_SERVE_REPLICAS", "0")
    with pytest.raises(ConfigError, match="DOJO_SERVE_REPLICAS must be at least 1, got 0"):
        Settings.from_env()
