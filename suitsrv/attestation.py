"""Attestation, the service side (RFC 9334 Verifier): challenges, evidence appraisal against the
release a device installed, signed EAR results, and the device's latest verdict.

Reference values come from the SUIT manifest the device reported installing (DESIGN.md "How a
manifest becomes a reference value"); nobody types golden measurements. The result is an EAR
(draft-ietf-rats-ear) signed with the service's ES256 key, published as a JWKS, so a gateway
can check it without asking again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest import AttestError
from attest.appraise import (
    Appraisal,
    ExpectedImage,
    Policy,
    ReferenceValues,
    appraise_eat,
    appraise_psa,
    appraise_tpm,
)
from attest.ear import public_jwk, sign_ear_jwt
from attest.ear_claims import Ear, Submod, VerifierId
from attest.evidence import parse_tpm_evidence, token_nonce
from attest.keys import VerifierKey, key_from_jwk, key_from_pem
from attest.quote import PcrValues, pcr_values_from_mapping
from attest.tpm import AkKey, ClockInfo, PublicKey, parse_public, public_from_pem
from manifests import parse_envelope, summarize
from manifests.numbers import DigestAlg

from . import __version__
from .config import Config
from .enrollment import Enrollments
from .errors import InvalidRequest, UnsupportedMediaType
from .files import create_private_file
from .jsonbody import json_object
from .nonces import NonceBook
from .store import DeviceRecord, ReleaseRecord, Store, VerdictRecord
from .store.attestation_queries import AttestationView, attestation_view

__all__ = [
    "DeviceLocks",
    "EarSigner",
    "Evidence",
    "Subject",
    "Verifier",
    "attest_device",
    "parse_evidence",
    "policy_for",
    "read_subject",
]

_DIGEST_NAMES = {DigestAlg.SHA256: "sha256", DigestAlg.SHA384: "sha384", DigestAlg.SHA512: "sha512"}
_FORMATS = ("tpm2-quote", "psa-token", "eat")


class EarSigner:
    """The service's EAR signing key (ES256), kept in the data directory (0600)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key
        jwk = public_jwk(key.public_key(), "")
        # RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order.
        members = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        digest = hashlib.sha256(members.encode()).digest()
        self.kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    @classmethod
    def load_or_create(cls, path: Path) -> EarSigner:
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise RuntimeError(f"{path} is not an EC private key")
            return cls(key)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # fmt: skip
        stored = create_private_file(path, pem)
        return cls(key) if stored == pem else cls.load_or_create(path)

    def sign(self, ear: Ear) -> str:
        return sign_ear_jwt(ear, self.key, self.kid)

    def jwks(self) -> dict[str, object]:
        return {"keys": [public_jwk(self.key.public_key(), self.kid)]}


@dataclass(frozen=True)
class Evidence:
    """One submission: the nonce it answers and the evidence in one of three formats."""

    nonce: bytes
    format: str
    quote: bytes = b""
    signature: bytes = b""
    pcrs: PcrValues | None = None
    event_log: bytes | None = None
    token: bytes = b""


def _b64(body: Mapping[str, Any], key: str, *, required: bool = True) -> bytes | None:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"evidence needs '{key}' (base64)")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{key}' must be a base64 string")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"'{key}' is not base64") from None


EVIDENCE_TYPES = {
    "application/json": "json",
    "application/cbor": "tpm2-quote",
    "application/psa-attestation-token": "psa-token",
    "application/eat+cwt": "eat",
}


def evidence_from_body(
    content_type: str, data: bytes, device_id: str | None
) -> tuple[Evidence, str | None]:
    """Evidence and the device id it names, from a request body of one of EVIDENCE_TYPES:
    JSON (module docs), TPM evidence as a CBOR map, or a bare PSA token / EAT (the device id
    then comes from the caller or the query)."""
    kind = EVIDENCE_TYPES.get(content_type)
    if kind is None:
        raise UnsupportedMediaType(f"send evidence as one of {sorted(EVIDENCE_TYPES)}")
    try:
        if kind == "json":
            body = json_object(data, "evidence")
            named = body.get("device_id")
            return parse_evidence(body), named if isinstance(named, str) else device_id
        if kind == "tpm2-quote":
            tpm = parse_tpm_evidence(data)
            evidence = Evidence(tpm.nonce, kind, tpm.quote, tpm.signature, tpm.pcrs, tpm.event_log)
            return evidence, tpm.device_id or device_id
        return Evidence(token_nonce(data, kind), kind, token=data), device_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"evidence is not JSON: {exc}") from exc
    except AttestError as exc:
        raise InvalidRequest(f"malformed evidence: {exc}") from exc


def parse_evidence(body: Mapping[str, Any]) -> Evidence:
    """Evidence from its JSON form (docs/attestation.md); InvalidRequest names what is wrong."""
    kind = body.get("format")
    if kind not in _FORMATS:
        raise InvalidRequest(f"format must be one of {list(_FORMATS)}")
    nonce = _b64(body, "nonce")
    assert nonce is not None
    if kind != "tpm2-quote":
        token = _b64(body, "token")
        assert token is not None
        return Evidence(nonce, str(kind), token=token)
    pcrs = body.get("pcrs")
    if not isinstance(pcrs, dict):
        raise InvalidRequest('TPM evidence needs "pcrs": {"sha256": {"16": "<hex>"}}')
    try:
        values = pcr_values_from_mapping(pcrs)
    except AttestError as exc:
        raise InvalidRequest(f"pcrs: {exc}") from exc
    quote, signature = _b64(body, "quote"), _b64(body, "signature")
    assert quote is not None and signature is not None
    return Evidence(
        nonce, "tpm2-quote", quote, signature, values, _b64(body, "event_log", required=False)
    )


@functools.lru_cache(maxsize=256)
def _release_images(envelope: bytes) -> tuple[ExpectedImage, ...]:
    """The acceptable image digests per component of a stored (already verified) envelope;
    cached by its bytes, since every attestation of a fleet asks about the same few releases."""
    images = []
    for summary in summarize(parse_envelope(envelope).manifest):
        acceptable = tuple(
            (_DIGEST_NAMES[d.algorithm], d.value)
            for d in summary.image_digests
            if d.algorithm in _DIGEST_NAMES
        )
        if acceptable:
            images.append(ExpectedImage(summary.component_id, acceptable))
    return tuple(images)


#: What appraising one device reads from the store, in one read (store/attestation_queries.py).
Subject = AttestationView


async def read_subject(store: Store, device_id: str) -> Subject | None:
    """The device and what its appraisal needs, in one store read (None: no such device)."""
    return await store.read(attestation_view, device_id)


def _reference(releases: tuple[ReleaseRecord, ...], pcr: int) -> ReferenceValues | None:
    """The images of the releases the device reported installing, as reference values; TPM
    devices measure them into ``pcr`` (the configured measurement PCR)."""
    images: list[ExpectedImage] = []
    for release in releases:
        images.extend(_release_images(release.envelope))
    if not images:
        return None
    digest = bytes.fromhex(releases[0].digest) if len(releases) == 1 else None
    return ReferenceValues(tuple(images), digest, pcr=pcr)


def policy_for(config: Config) -> Policy:
    """The appraisal policy the configuration asks for; its id tells a gateway reading the EAR
    when images in a resettable PCR were allowed to affirm (ADR 0006)."""
    if config.allow_resettable_pcrs:
        return Policy(allow_resettable_pcrs=True, policy_id="suitsrv/allow-resettable-pcrs")
    return Policy()


def _ak(device: DeviceRecord) -> PublicKey | AkKey:
    try:
        if "ak_public" in device.keys:
            return parse_public(base64.b64decode(device.keys["ak_public"]))
        if "ak_pem" in device.keys:
            return public_from_pem(device.keys["ak_pem"].encode())
    except (AttestError, binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"the device's registered AK is unusable: {exc}") from exc
    raise InvalidRequest("the device has no attestation key (AK) enrolled")


def _iak(device: DeviceRecord) -> list[VerifierKey]:
    name = f"device/{device.device_id}"
    try:
        if "iak_pem" in device.keys:
            return [key_from_pem(device.keys["iak_pem"].encode(), name=name)]
        if "iak_jwk" in device.keys:
            return [key_from_jwk(json.loads(device.keys["iak_jwk"]), name=name)]
    except (AttestError, ValueError) as exc:
        raise InvalidRequest(f"the device's registered IAK is unusable: {exc}") from exc
    raise InvalidRequest("the device has no initial attestation key (IAK) registered")


class DeviceLocks:
    """One lock per device whose evidence is being appraised: a device's appraisals run one at a
    time, from reading its last verdict to storing the new one, so each is checked against the
    TPM clock the one before stored (quote.py's monotonic check) and verdicts are stored in the
    order they were appraised. A lock lives only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, device_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(device_id) or (asyncio.Lock(), 0)
        self._locks[device_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[device_id]
            if users == 1:
                del self._locks[device_id]
            else:
                self._locks[device_id] = (lock, users - 1)


@dataclass(frozen=True)
class Verifier:
    """What appraisal needs besides the store: settings, the EAR key, the open challenges, the
    appraisals in progress."""

    config: Config
    signer: EarSigner
    nonces: NonceBook
    policy: Policy
    enrollments: Enrollments = field(default_factory=Enrollments)
    appraising: DeviceLocks = field(default_factory=DeviceLocks)


async def attest_device(
    store: Store, verifier: Verifier, subject: Subject, evidence: Evidence, now: float
) -> VerdictRecord:
    """Appraise evidence answering one of this device's challenges, sign the EAR, keep it as
    the device's latest verdict. A stale or unknown nonce is refused (422) and stores nothing;
    evidence that fails appraisal is a stored contraindicated verdict, not an error.
    ``subject`` is what ``read_subject`` returned for the device."""
    config, policy = verifier.config, verifier.policy
    device, previous = subject.device, subject.previous
    challenge = verifier.nonces.consume(evidence.nonce, device.device_id, now)
    reference = _reference(subject.releases, config.measurement_pcr)
    appraisal: Appraisal
    if evidence.format == "tpm2-quote":
        ak = _ak(device)
        clock = ClockInfo(*previous.clock) if previous and previous.clock else None
        appraisal = appraise_tpm(
            evidence.quote, evidence.signature, ak, nonce=challenge.nonce,
            pcrs=evidence.pcrs or PcrValues({}), event_log=evidence.event_log,
            reference=reference, previous=clock, policy=policy,
        )  # fmt: skip
    elif evidence.format == "psa-token":
        appraisal = appraise_psa(evidence.token, _iak(device), nonce=challenge.nonce,
                                 reference=reference, policy=policy)  # fmt: skip
    else:
        appraisal = appraise_eat(evidence.token, _iak(device), nonce=challenge.nonce,
                                 reference=reference, policy=policy)  # fmt: skip
    iat = int(now)
    extra: dict[str, object] = {
        "suitsrv.device_id": device.device_id,
        "suitsrv.evidence": appraisal.evidence,
        "suitsrv.reasons": list(appraisal.reasons),
    }
    if appraisal.rebooted is not None:
        extra["suitsrv.rebooted"] = appraisal.rebooted
    ear = Ear(
        iat=iat,
        verifier_id=VerifierId("suitsrv", __version__),
        submods={device.device_id: Submod(appraisal.status, appraisal.vector,
                                          (policy.policy_id,), challenge.nonce, extra)},
        exp=iat + config.result_ttl,
        nonce=challenge.nonce,
    )  # fmt: skip
    c = appraisal.clock
    verdict = VerdictRecord(
        device_id=device.device_id,
        status=str(appraisal.status),
        ear=verifier.signer.sign(ear),
        evidence=appraisal.evidence,
        appraised_at=now,
        expires_at=float(iat + config.result_ttl),
        reasons=appraisal.reasons,
        clock=(c.clock, c.reset_count, c.restart_count, c.safe) if c else
        (previous.clock if previous else None),
    )  # fmt: skip
    await store.put_verdict(verdict)
    return verdict
