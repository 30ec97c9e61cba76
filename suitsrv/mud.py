"""MUD files (RFC 8520) per device class: normal policy, quarantine pinhole, detached CMS signature.

The quarantine extension names the pinhole ACEs in both spellings, draft-richardson-shg-mud-
quarantined-access-02 and NIST SDN-MUD, both declared in `extensions` (RFC 8520 §3.9). Pure
except `MudSigner.load_or_create` (key files) and `.sign` (CMS signing time). See docs/mud.md.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID

__all__ = [
    "EXTENSIONS", "MUD_MEDIA_TYPE", "PINHOLE_ACE_NAMES", "SIGNATURE_MEDIA_TYPE", "CloudService",
    "MudPolicy", "MudSigner", "build_mud", "encode_mud", "mud_url", "pinhole_ace_names",
    "update_endpoint",
]  # fmt: skip

MUD_MEDIA_TYPE = "application/mud+json"  # registered by RFC 8520 (IANA considerations)
SIGNATURE_MEDIA_TYPE = "application/pkcs7-signature"
# Extension names are the module names, as RFC 8520 Appendix C names its sample extension.
EXTENSIONS = ("ietf-mud-quarantine", "nist-mud")
_QUARANTINE_MEMBERS = (
    "ietf-mud-quarantine:quaranteed-device-policy",  # the draft's spelling, sic
    "nist-mud:quarantined-device-policy",
)
# fw0 = update host over TCP; dns0/ntp0 = RFC 8520 Appendix B controllers. Both directions, as
# the NIST quarantine test lists them: a gateway enables ACEs by name.
PINHOLE_ACE_NAMES = tuple(f"{p}-{d}" for p in ("fw0", "dns0", "ntp0") for d in ("frdev", "todev"))
_CONTROLLERS = (("dns0", "urn:ietf:params:mud:dns", 53), ("ntp0", "urn:ietf:params:mud:ntp", 123))
_TCP, _UDP = 6, 17
_FAMILIES = ("ipv4", "ipv6")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")  # inet:domain-name
_SEGMENT = re.compile(r"[A-Za-z0-9_:.-]{1,128}")
KEY_FILE, CERT_FILE = "mud-signing-key.pem", "mud-signing-cert.pem"
_CERT_LIFETIME, _RENEW_BEFORE = timedelta(days=3650), timedelta(days=30)


def _check_endpoint(host: str, port: int) -> None:
    try:
        ok = "%" not in str(ipaddress.ip_address(host))  # a zone id fits no inet:ip-prefix
    except ValueError:
        ok = _DNS_NAME.fullmatch(host) is not None
    if not ok:
        raise RuntimeError(f"{host!r} is neither a DNS name nor an unscoped IP address")
    if isinstance(port, bool) or not 0 < port < 1 << 16:
        raise RuntimeError(f"port {port!r} is outside 1..65535")


@dataclass(frozen=True)
class CloudService:
    """A further host the device reaches (device-initiated TCP) in normal operation only."""

    host: str
    port: int = 443


@dataclass(frozen=True, kw_only=True)
class MudPolicy:
    """What one device class may reach; `update_host` is the service's public host."""

    mud_url: str
    systeminfo: str
    mfg_name: str
    model_name: str
    update_host: str
    last_update: datetime
    update_port: int = 443
    cache_validity: int = 48
    is_supported: bool = True
    cloud_services: tuple[CloudService, ...] = ()

    def __post_init__(self) -> None:
        parts = urlsplit(self.mud_url)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.query:
            raise RuntimeError(f"mud-url {self.mud_url!r} is not an absolute http(s) URL")
        endpoints = [(s.host, s.port) for s in self.cloud_services]
        for host, port in [(self.update_host, self.update_port), *endpoints]:
            _check_endpoint(host, port)
        if not 1 <= self.cache_validity <= 168:  # RFC 8520 §3.5: hours, 1..168
            raise RuntimeError(f"cache-validity {self.cache_validity} is outside 1..168")
        if self.last_update.tzinfo is None:
            raise RuntimeError("last_update needs a time zone (yang:date-and-time)")


def update_endpoint(base_url: str) -> tuple[str, int]:
    """The host and TCP port of the public base URL: the pinhole's destination."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RuntimeError(f"base URL {base_url!r} is not an absolute http(s) URL")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def mud_url(base_url: str, vendor: str, class_id: str) -> str:
    """`{base}/v1/mud/{vendor}/{class_id}.json`; the signature is that URL + `.p7s`."""
    for segment in (vendor, class_id):
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise RuntimeError(f"{segment!r} cannot be a MUD URL path segment")
    return f"{base_url.rstrip('/')}/v1/mud/{vendor}/{class_id}.json"


def pinhole_ace_names(policy: MudPolicy) -> tuple[str, ...]:
    """The ACE names a gateway keeps enabled while the device is quarantined (any class)."""
    return PINHOLE_ACE_NAMES


def _host_match(host: str, family: str, outbound: bool) -> dict[str, Any] | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # RFC 8520 §8: dst-dnsname only in from-device ACLs, src-dnsname only in to-device.
        return {f"ietf-acldns:{'dst' if outbound else 'src'}-dnsname": host}
    if f"ipv{address.version}" != family:
        return None
    side = "destination" if outbound else "source"
    return {f"{side}-{family}-network": f"{address}/{address.max_prefixlen}"}


def _ace(name: str, matches: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "matches": matches, "actions": {"forwarding": "accept"}}


def _aces(policy: MudPolicy, family: str, outbound: bool) -> list[dict[str, Any]]:
    sfx, port_key = ("-frdev", "destination-port") if outbound else ("-todev", "source-port")
    tcp = [("fw0", policy.update_host, policy.update_port)]
    tcp += [(f"cl{i}", s.host, s.port) for i, s in enumerate(policy.cloud_services)]
    aces = []
    for prefix, host, port in tcp:
        l3 = _host_match(host, family, outbound)
        if l3 is not None:  # an IP literal sits only in the ACLs of its own family
            # RFC 8520 §9: the device opens the connection, in both ACLs of the pair.
            l4 = {"ietf-mud:direction-initiated": "from-device", port_key: _eq(port)}
            aces.append(_ace(prefix + sfx, {family: {**l3, "protocol": _TCP}, "tcp": l4}))
    # RFC 8520 Appendix B: DNS and NTP through the controllers the administrator maps.
    for prefix, urn, port in _CONTROLLERS:
        matches = {"ietf-mud:mud": {"controller": urn}, family: {"protocol": _UDP}}
        aces.append(_ace(prefix + sfx, {**matches, "udp": {port_key: _eq(port)}}))
    return aces


def _eq(port: int) -> dict[str, Any]:
    return {"operator": "eq", "port": port}


def build_mud(policy: MudPolicy) -> dict[str, Any]:
    """The MUD file as an RFC 7951 JSON tree, members in RFC 8520 §9 order."""
    # ACL names are global in some MUD managers' datastores (NIST SDN-MUD): make them unique
    # per MUD URL, stable across restarts.
    token = hashlib.sha256(policy.mud_url.encode()).hexdigest()[:8]
    names = {(f, d): f"mud-{token}-v{f[-1]}{d}" for f in _FAMILIES for d in ("fr", "to")}
    acls = [
        {"name": names[f, d], "type": f"{f}-acl-type", "aces": {"ace": _aces(policy, f, d == "fr")}}
        for f in _FAMILIES
        for d in ("fr", "to")
    ]
    quarantine = {"enabled-ace-names": [{"ace-name": n} for n in pinhole_ace_names(policy)]}
    fr, to = ({"access-lists": {"access-list": [{"name": names[f, d]} for f in _FAMILIES]}}
              for d in ("fr", "to"))  # fmt: skip
    mud: dict[str, Any] = {
        "mud-version": 1,
        "mud-url": policy.mud_url,
        "last-update": policy.last_update.astimezone(UTC).isoformat(timespec="seconds"),
        "mud-signature": policy.mud_url + ".p7s",  # RFC 8520 §13
        "cache-validity": policy.cache_validity,
        "is-supported": policy.is_supported,
        "systeminfo": policy.systeminfo,
        "mfg-name": policy.mfg_name,
        "model-name": policy.model_name,
        "extensions": list(EXTENSIONS),
        "from-device-policy": fr,
        "to-device-policy": to,
    }
    for member in _QUARANTINE_MEMBERS:
        mud[member] = quarantine
    return {"ietf-mud:mud": mud, "ietf-access-control-list:acls": {"acl": acls}}


def encode_mud(doc: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON, two-space indent, member order kept, every line ending in CRLF.

    CRLF, not LF: `openssl cms -verify` without `-binary` (the RFC 8520 §13.2 command, and
    osMUD's) converts LF to CRLF before digesting, so an LF file verifies only with `-binary`.
    A CRLF file with no trailing spaces is the same in both modes.
    """
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    return (text.replace("\n", "\r\n") + "\r\n").encode("utf-8")


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """temp + fsync + rename, then fsync the directory: a crash leaves the old file or none."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _self_signed(key: ec.EllipticCurvePrivateKey, cn: str, now: datetime) -> x509.Certificate:
    name = _name(cn)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))  # tolerate gateways whose clocks lag
        .not_valid_after(now + _CERT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, *(False,) * 8), critical=True)  # digitalSignature
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class MudSigner:
    """The service's MUD signing key (ECDSA P-256) and its self-signed certificate."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def load_or_create(
        cls, directory: Path, subject_cn: str, *, now: datetime | None = None
    ) -> MudSigner:
        """Load the key (0600) and certificate from `directory`, creating what is missing.

        The certificate is reissued for the same key when it is about to expire, names another
        subject or another key, so the signer's SKI (what gateways pin) never changes.
        """
        now = now or datetime.now(UTC)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
        if key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise RuntimeError(f"{key_path} is not an ECDSA P-256 private key")
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            pkcs8, plain = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            pem = key.private_bytes(Encoding.PEM, pkcs8, plain)
            _write_atomic(key_path, pem, 0o600)
        if cert_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            same = cert.public_key() == key.public_key() and cert.subject == _name(subject_cn)
            if same and cert.not_valid_after_utc - _RENEW_BEFORE > now:
                return cls(cert, key)
        cert = _self_signed(key, subject_cn, now)
        _write_atomic(cert_path, cert.public_bytes(Encoding.PEM), 0o644)
        return cls(cert, key)

    def sign(self, data: bytes) -> bytes:
        """A DER CMS SignedData over `data`, detached, with the certificate (RFC 8520 §13.2)."""
        options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
        builder = pkcs7.PKCS7SignatureBuilder().set_data(data)
        builder = builder.add_signer(self.certificate, self.private_key, hashes.SHA256())
        return builder.sign(Encoding.DER, options)

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(Encoding.PEM)

    @property
    def subject_key_identifier(self) -> bytes:
        """What a gateway pins (draft-ietf-iotops-mud-acceptable-urls, suit-mud-ski)."""
        ext = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ext.value.digest
