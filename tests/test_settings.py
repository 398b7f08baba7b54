"""Settings: defaults, YAML file, ECHOGATE_* environment and overrides, in that precedence."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from echogate.settings import Settings


def test_defaults_run_on_shipped_model_and_embedded_store(monkeypatch):
    monkeypatch.delenv("ECHOGATE_CONFIG", raising=False)
    s = Settings.load()
    assert s.model_path.endswith("bot_origin.onnx") and s.store.url.endswith(".db")
    assert s.port == 50051


def test_precedence_file_then_env_then_overrides(tmp_path, monkeypatch):
    cfg = tmp_path / "echogate.yaml"
    cfg.write_text("port: 6000\nmetrics_port: 6001\nlimits:\n  max_batch: 10\n  max_turns: 20\n")
    monkeypatch.setenv("ECHOGATE_METRICS_PORT", "7001")
    monkeypatch.setenv("ECHOGATE_LIMITS__MAX_TURNS", "30")
    s = Settings.load(cfg, port=None, host="0.0.0.0")
    assert (s.port, s.metrics_port, s.host) == (6000, 7001, "0.0.0.0")
    assert (s.limits.max_batch, s.limits.max_turns) == (10, 30)
    assert Settings.load(cfg, port=6500).port == 6500


def test_invalid_settings_name_the_field(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("limits:\n  max_batch: 0\nunknown_key: 1\n")
    with pytest.raises(ValidationError) as err:
        Settings.load(cfg)
    text = str(err.value)
    assert "limits.max_batch" in text and "unknown_key" in text


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        Settings.load(tmp_path / "nope.yaml")
