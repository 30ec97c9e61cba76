"""The device agent's configuration: one frozen dataclass from a TOML file, unknown keys
refused, relative paths taken from the file's folder. Example ``agent.toml``::

    server = "https://updates.example"
    device-id = "dev-1"
    token-file = "dev-1.token"            # or: token = "sst_..."
    tcti = "swtpm:host=127.0.0.1,port=2321"   # real hardware: "device:/dev/tpmrm0"
    state-dir = "/var/lib/suitsrv-agent"
    vendor-key = "vendor.pub.pem"         # the manufacturer's manifest signing key (public)
    vendor-domain = "acme.example"        # or: vendor-id = "<uuid>"
    class-name = "thermostat-v2"          # or: class-id = "<uuid>"
    config-file = "/etc/thermostat.conf"  # backed up and restored
    pcr = 16                              # 16 or 23: the PCRs software may reset
    ca-file = "ca.pem"                    # TLS roots for the server (default: system's)
    ek-template = "EK-ECC256"             # or "EK-RSA2048" (TCG EK profile, low range)
    report-key = "dev-1.report.pem"       # signs SUIT reports (COSE_Sign1), optional
"""

from __future__ import annotations

import hashlib
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from manifests import (
    ManifestError,
    SigningKey,
    TrustAnchor,
    anchor_from_pem,
    class_id,
    signing_key_from_pem,
    vendor_id_from_domain,
)

from .errors import AgentConfigError

__all__ = ["EK_TEMPLATES", "AgentConfig", "load_agent_config"]

#: TCG EK Credential Profile low-range templates, whose policy is PolicySecret(ENDORSEMENT).
EK_TEMPLATES: Final = ("EK-ECC256", "EK-RSA2048")
#: PC Client PTP: PCR 16 (debug) and 23 (application) are resettable from locality 0.
_RESETTABLE_PCRS: Final = (16, 23)
_KEYS: Final = {
    "server", "device-id", "token", "token-file", "tcti", "state-dir", "vendor-key",
    "vendor-domain", "vendor-id", "class-name", "class-id", "config-file", "pcr", "ca-file",
    "ek-template", "report-key",
}  # fmt: skip


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent was provisioned with; built once by ``load_agent_config``."""

    server: str
    device_id: str
    token: str = field(repr=False)
    tcti: str
    state_dir: Path
    vendor_anchor: TrustAnchor
    vendor_key_sha256: str
    vendor_id: uuid.UUID
    class_id: uuid.UUID
    config_file: Path | None = None
    pcr: int = 16
    ca_file: Path | None = None
    ek_template: str = "EK-ECC256"
    report_key: SigningKey | None = field(default=None, repr=False)

    def url(self, path: str) -> str:
        return f"{self.server}{path}"


def _text(doc: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise AgentConfigError(f"{key} is required")
        return None
    if not isinstance(value, str) or not value:
        raise AgentConfigError(f"{key} must be a non-empty string")
    return value


def _one_of(doc: dict[str, Any], first: str, second: str) -> tuple[str | None, str | None]:
    a, b = _text(doc, first), _text(doc, second)
    if (a is None) == (b is None):
        raise AgentConfigError(f"give exactly one of {first} or {second}")
    return a, b


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AgentConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


def _uuid(value: str, key: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise AgentConfigError(f"{key} must be a UUID, got {value!r}") from None


def _server(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise AgentConfigError(f"server must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _identity(doc: dict[str, Any]) -> tuple[uuid.UUID, uuid.UUID]:
    domain, vendor_text = _one_of(doc, "vendor-domain", "vendor-id")
    vendor = vendor_id_from_domain(domain) if domain else _uuid(str(vendor_text), "vendor-id")
    name, class_text = _one_of(doc, "class-name", "class-id")
    # manifest-37 §8.4.8.2: class-id = UUID5(vendor-id, class-specific information), as the
    # service derives it when a device is registered with --class-name.
    return vendor, class_id(vendor, name) if name else _uuid(str(class_text), "class-id")


def load_agent_config(path: Path, *, need_token: bool = True) -> AgentConfig:
    """Read and check ``agent.toml``; AgentConfigError names the first problem. Without
    ``need_token`` (``identity``, which talks to no server: its output is what registers the
    device, before any token exists) the token may be missing; it is then empty."""
    try:
        doc = tomllib.loads(_read(path, "agent config").decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AgentConfigError(f"{path}: {exc}") from exc
    if unknown := set(doc) - _KEYS:
        raise AgentConfigError(f"{path}: unknown keys {sorted(unknown)}")
    base = path.parent

    def file(key: str) -> Path | None:
        value = _text(doc, key)
        return None if value is None else base / value

    def required_file(key: str) -> Path:
        return base / str(_text(doc, key, required=True))

    token, token_file = _one_of(doc, "token", "token-file")
    if token_file is not None and (need_token or (base / token_file).exists()):
        token = _read(base / token_file, "token file").decode("utf-8", "replace").strip()
    if not token and need_token:
        raise AgentConfigError("the device token is empty")
    vendor_key = required_file("vendor-key")
    vendor_pem = _read(vendor_key, "vendor key")
    try:
        anchor = anchor_from_pem(vendor_pem, name=vendor_key.name)
        report_path = file("report-key")
        report_key = (
            None if report_path is None else signing_key_from_pem(_read(report_path, "report key"))
        )
    except (ManifestError, ValueError) as exc:
        raise AgentConfigError(f"unusable key: {exc}") from exc
    pcr = doc.get("pcr", 16)
    if pcr not in _RESETTABLE_PCRS or isinstance(pcr, bool):
        raise AgentConfigError(f"pcr must be one of {_RESETTABLE_PCRS}, got {pcr!r}")
    ek_template = _text(doc, "ek-template") or "EK-ECC256"
    if ek_template not in EK_TEMPLATES:
        raise AgentConfigError(f"ek-template must be one of {EK_TEMPLATES}")
    vendor, klass = _identity(doc)
    return AgentConfig(
        server=_server(str(_text(doc, "server", required=True))),
        device_id=str(_text(doc, "device-id", required=True)),
        token=token or "",
        tcti=str(_text(doc, "tcti", required=True)),
        state_dir=required_file("state-dir"),
        vendor_anchor=anchor,
        vendor_key_sha256=hashlib.sha256(vendor_pem).hexdigest(),
        vendor_id=vendor,
        class_id=klass,
        config_file=file("config-file"),
        pcr=int(pcr),
        ca_file=file("ca-file"),
        ek_template=ek_template,
        report_key=report_key,
    )
