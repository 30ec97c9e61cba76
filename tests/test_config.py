"""Configuration: TOML file plus SUITSRV_* environment, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from suitsrv.config import ConfigError, load_config


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "suitsrv.toml"
    path.write_text(
        'data-dir = "/srv/x"\nlisten = "0.0.0.0:9000"\npublic-base-url = "https://u.example/"\n'
        "[limits]\npayload-bytes = 1000\n[poll]\ninterval = 60\njitter = 0.5\n"
    )
    config = load_config(path, {"SUITSRV_POLL_INTERVAL": "120", "SUITSRV_VECTORS": "ignored"})
    assert config.data_dir == Path("/srv/x")
    assert (config.host, config.port) == ("0.0.0.0", 9000)
    assert config.base_url == "https://u.example"
    assert config.limits.payload_bytes == 1000
    assert (config.poll_interval, config.poll_jitter) == (120, 0.5)


def test_environment_only(tmp_path: Path) -> None:
    config = load_config(None, {"SUITSRV_DATA_DIR": str(tmp_path), "SUITSRV_LISTEN": "[::1]:8443"})
    assert (config.host, config.port) == ("::1", 8443)
    assert config.base_url == "http://[::1]:8443"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('data-dir = "/x"\nnope = 1\n', {}, "unknown keys"),
        ('data-dir = "/x"\n[limits]\nfoo = 1\n', {}, "unknown keys"),
        ("", {}, "data-dir is required"),
        ('data-dir = "/x"\nlisten = "nohostport"\n', {}, "HOST:PORT"),
        ('data-dir = "/x"\n', {"SUITSRV_POLL_JITTER": "2"}, "jitter"),
        ('data-dir = "/x"\n', {"SUITSRV_LIMIT_PAYLOAD_BYTES": "lots"}, "integer"),
        ('data-dir = "/x"\npublic-base-url = "ftp://x"\n', {}, "http"),
        ('data-dir = "/x"\n[tls]\ncert = "c.pem"\n', {}, "both"),
        ("data-dir = [", {}, "cannot read"),
        ('data-dir = "/x"\n[attestation]\nmeasurement-pcr = 24\n', {}, "measurement-pcr"),
        ('data-dir = "/x"\n', {"SUITSRV_ALLOW_RESETTABLE_PCRS": "maybe"}, "true or false"),
        ('data-dir = "/x"\n[attestation]\nallow-resettable-pcrs = 1.5\n', {}, "true or false"),
        ('data-dir = "/x"\naccess-log = "sometimes"\n', {}, "access-log"),
    ],
)
def test_invalid(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env)


def test_command_line_overrides_keep_the_environment(tmp_path: Path) -> None:
    env = {"SUITSRV_DATA_DIR": "/ignored", "SUITSRV_ACCESS_LOG": "0", "SUITSRV_POLL_INTERVAL": "60"}
    config = load_config(None, env, overrides={"data-dir": str(tmp_path)})
    assert config.data_dir == tmp_path
    assert config.access_log is False and config.poll_interval == 60


def test_attestation_lifecycle_and_vault_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'data-dir = "/x"\n[attestation]\nnonce-ttl = 30\n[lifecycle]\nrecidivism-window = 60\n'
        '[vault]\nkey-file = "/etc/k"\n[limits]\nconfig-bytes = 4096\n'
    )
    config = load_config(path, {})
    assert (config.nonce_ttl, config.recidivism_window) == (30, 60)
    assert config.vault_key_file == Path("/etc/k") and config.limits.config_bytes == 4096


def test_images_in_resettable_pcrs_affirm_only_when_configured(tmp_path: Path) -> None:
    """The product default: images measured into PCR 16 at most warn (ADR 0006)."""
    default = load_config(None, {"SUITSRV_DATA_DIR": str(tmp_path)})
    assert (default.measurement_pcr, default.allow_resettable_pcrs) == (16, False)
    path = tmp_path / "c.toml"
    path.write_text('data-dir = "/x"\n[attestation]\nmeasurement-pcr = 9\n'
                    "allow-resettable-pcrs = true\n")  # fmt: skip
    config = load_config(path, {})
    assert (config.measurement_pcr, config.allow_resettable_pcrs) == (9, True)
    config = load_config(path, {"SUITSRV_ALLOW_RESETTABLE_PCRS": "off"})
    assert config.allow_resettable_pcrs is False
