"""Service configuration: one frozen dataclass, built once at start-up from a TOML file and the
``SUITSRV_*`` environment variables (the environment wins). Unknown file keys are refused.
This is the only module that reads ``os.environ`` (STYLE.md "Config").

Example ``suitsrv.toml``::

    data-dir = "/var/lib/suitsrv"
    listen = "0.0.0.0:8443"
    public-base-url = "https://updates.example.com"

    [limits]
    envelope-bytes = 1048576
    payload-bytes = 1073741824
    report-bytes = 65536

    [poll]
    interval = 3600      # seconds a device waits between polls
    jitter = 0.2         # +-20 % randomisation of that hint

    [tls]
    cert = "/etc/suitsrv/cert.pem"
    key = "/etc/suitsrv/key.pem"

    [attestation]
    nonce-ttl = 120      # seconds a challenge stays valid
    result-ttl = 3600    # exp of an attestation result (EAR) after its iat
    measurement-pcr = 16 # the PCR (SHA-256 bank) TPM devices measure their images into
    allow-resettable-pcrs = false  # true: images in PCR 16/23 may affirm (swtpm simulations)

    [lifecycle]
    recidivism-window = 2592000   # quarantined again within 30 days: escalate to an operator
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = ["Config", "ConfigError", "Limits", "load_config"]


class ConfigError(Exception):
    """The configuration file or environment holds an invalid value."""


@dataclass(frozen=True)
class Limits:
    envelope_bytes: int = 1 << 20
    payload_bytes: int = 1 << 30
    report_bytes: int = 64 << 10
    config_bytes: int = 1 << 20


@dataclass(frozen=True)
class Config:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    public_base_url: str = ""
    poll_interval: int = 3600
    poll_jitter: float = 0.2
    limits: Limits = field(default_factory=Limits)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    access_log: bool = True
    nonce_ttl: int = 120
    result_ttl: int = 3600
    recidivism_window: int = 30 * 86400
    measurement_pcr: int = 16
    allow_resettable_pcrs: bool = False
    vault_key_file: Path | None = None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "suitsrv.sqlite3"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


_FILE_KEYS: Final = {
    "data-dir", "listen", "public-base-url", "limits", "poll", "tls", "access-log", "attestation",
    "lifecycle", "vault",
}  # fmt: skip
_ENV: Final = {
    "SUITSRV_DATA_DIR": "data-dir",
    "SUITSRV_LISTEN": "listen",
    "SUITSRV_PUBLIC_BASE_URL": "public-base-url",
    "SUITSRV_POLL_INTERVAL": "poll.interval",
    "SUITSRV_POLL_JITTER": "poll.jitter",
    "SUITSRV_LIMIT_ENVELOPE_BYTES": "limits.envelope-bytes",
    "SUITSRV_LIMIT_PAYLOAD_BYTES": "limits.payload-bytes",
    "SUITSRV_LIMIT_REPORT_BYTES": "limits.report-bytes",
    "SUITSRV_LIMIT_CONFIG_BYTES": "limits.config-bytes",
    "SUITSRV_VAULT_KEY_FILE": "vault.key-file",
    "SUITSRV_TLS_CERT": "tls.cert",
    "SUITSRV_TLS_KEY": "tls.key",
    "SUITSRV_ACCESS_LOG": "access-log",
    "SUITSRV_NONCE_TTL": "attestation.nonce-ttl",
    "SUITSRV_RESULT_TTL": "attestation.result-ttl",
    "SUITSRV_MEASUREMENT_PCR": "attestation.measurement-pcr",
    "SUITSRV_ALLOW_RESETTABLE_PCRS": "attestation.allow-resettable-pcrs",
    "SUITSRV_RECIDIVISM_WINDOW": "lifecycle.recidivism-window",
}


def _int(value: Any, name: str, low: int = 0, high: int = 1 << 62) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise ConfigError(f"{name} must be within {low}..{high}, got {value!r}")
    return number


def _listen(value: Any) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep or not host:
        raise ConfigError(f"listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), _int(port, "listen port", 0, 65535)


def _table(doc: Mapping[str, Any], name: str, keys: set[str]) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    unknown = set(table) - keys
    if unknown:
        raise ConfigError(f"[{name}]: unknown keys {sorted(unknown)}")
    return table


_TABLES: Final = {
    "limits": {"envelope-bytes", "payload-bytes", "report-bytes", "config-bytes"},
    "poll": {"interval", "jitter"},
    "tls": {"cert", "key"},
    "attestation": {"nonce-ttl", "result-ttl", "measurement-pcr", "allow-resettable-pcrs"},
    "lifecycle": {"recidivism-window"},
    "vault": {"key-file"},
}


def _flatten(path: Path | None) -> dict[str, Any]:
    """The file's settings as ``{"key": v, "table.key": v}``; unknown keys refused."""
    if path is None:
        return {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    unknown = set(doc) - _FILE_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    flat = {k: v for k, v in doc.items() if k not in _TABLES}
    for name, keys in _TABLES.items():
        flat.update({f"{name}.{k}": v for k, v in _table(doc, name, keys).items()})
    return flat


def _bool(value: Any, name: str) -> bool:
    """A TOML boolean, or its spelling in an environment variable."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _jitter(value: Any) -> float:
    try:
        jitter = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"poll jitter must be a number, got {value!r}") from None
    if not 0 <= jitter < 1:
        raise ConfigError("poll jitter must be within 0..1 (a fraction of the interval)")
    return jitter


def _limits(flat: Mapping[str, Any]) -> Limits:
    def limit(key: str, default: int, low: int) -> int:
        return _int(flat.get(f"limits.{key}", default), key, low)

    return Limits(
        envelope_bytes=limit("envelope-bytes", Limits.envelope_bytes, 64),
        payload_bytes=limit("payload-bytes", Limits.payload_bytes, 1),
        report_bytes=limit("report-bytes", Limits.report_bytes, 64),
        config_bytes=limit("config-bytes", Limits.config_bytes, 1),
    )


def _base_url(value: Any) -> str:
    url = str(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"public-base-url must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Config:
    """Read ``path`` (optional), the environment and command-line ``overrides`` (file-key
    names such as ``"data-dir"``; they win over both) into a Config; ConfigError when invalid."""
    env = os.environ if environ is None else environ
    flat = _flatten(path)
    flat.update({key: env[var] for var, key in _ENV.items() if var in env})
    flat.update(overrides or {})
    if "data-dir" not in flat:
        raise ConfigError("data-dir is required (config file or SUITSRV_DATA_DIR)")
    config = Config(data_dir=Path(flat["data-dir"]).expanduser())
    if "listen" in flat:
        host, port = _listen(flat["listen"])
        config = replace(config, host=host, port=port)
    if "public-base-url" in flat:
        config = replace(config, public_base_url=_base_url(flat["public-base-url"]))
    cert, key = flat.get("tls.cert"), flat.get("tls.key")
    if (cert is None) != (key is None):
        raise ConfigError("TLS needs both a certificate and a key")
    return replace(
        config,
        poll_interval=_int(flat.get("poll.interval", 3600), "poll interval", 1, 7 * 86400),
        poll_jitter=_jitter(flat.get("poll.jitter", config.poll_jitter)),
        limits=_limits(flat),
        access_log=_bool(flat.get("access-log", True), "access-log"),
        nonce_ttl=_int(flat.get("attestation.nonce-ttl", 120), "nonce-ttl", 5, 3600),
        result_ttl=_int(flat.get("attestation.result-ttl", 3600), "result-ttl", 60, 30 * 86400),
        measurement_pcr=_int(flat.get("attestation.measurement-pcr", 16), "measurement-pcr", 0, 23),
        allow_resettable_pcrs=_bool(
            flat.get("attestation.allow-resettable-pcrs", False), "allow-resettable-pcrs"
        ),
        recidivism_window=_int(
            flat.get("lifecycle.recidivism-window", 30 * 86400), "recidivism-window", 0, 10**9
        ),
        vault_key_file=Path(str(flat["vault.key-file"])) if "vault.key-file" in flat else None,
        tls_cert=Path(str(cert)) if cert is not None else None,
        tls_key=Path(str(key)) if key is not None else None,
    )
