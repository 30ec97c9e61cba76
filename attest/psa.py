"""PSA attestation token (RFC 9783): parse the COSE container and the claims, then verify.

Both claim-key sets are read (RFC 9783 §"Backwards Compatibility": verifiers SHOULD accept
both): the RFC 9783 / PSA 2.0.0 keys (EAT 10, 256, 265 plus 2394..2400, boot seed at 268 or
the PSA 2.0.0 draft's 2397) and the legacy PSA_IOT_PROFILE_1 private-use keys -75000..-75010.
A token uses one set: mixing them is refused. Unknown claims are ignored (RFC 9711 §4).
The freshness and reference-value checks belong to appraisal; ``expected_nonce`` is offered
here so a caller can check the nonce in the same step as the signature.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from . import _cbor, _cose
from .errors import DecodeError, FreshnessError
from .keys import VerifierKey

__all__ = [
    "PsaClaims",
    "PsaToken",
    "SecurityLifecycle",
    "SoftwareComponent",
    "VerifiedPsaToken",
    "parse_psa_token",
    "verify_psa_token",
]


class SecurityLifecycle(StrEnum):
    """RFC 9783 §4.3.1: the major lifecycle state; the low byte is implementation defined."""

    UNKNOWN = "unknown"
    ASSEMBLY_AND_TEST = "assembly-and-test"
    PSA_ROT_PROVISIONING = "psa-rot-provisioning"
    SECURED = "secured"
    NON_PSA_ROT_DEBUG = "non-psa-rot-debug"
    RECOVERABLE_PSA_ROT_DEBUG = "recoverable-psa-rot-debug"
    DECOMMISSIONED = "decommissioned"


_LIFECYCLES: Final = tuple(SecurityLifecycle)  # index = value >> 12, values 0xN000..0xN0ff
_HASH_SIZES: Final = (32, 48, 64)  # psa-hash-type = bytes .size 32 / 48 / 64


@dataclass(frozen=True)
class SoftwareComponent:
    """One entry of software-components (RFC 9783 §4.4.1)."""

    measurement_value: bytes
    signer_id: bytes | None = None
    measurement_type: str | None = None
    version: str | None = None
    measurement_desc: str | None = None


@dataclass(frozen=True)
class PsaClaims:
    """The PSA claims-set; ``legacy`` when read from PSA_IOT_PROFILE_1 (-75xxx) keys."""

    profile: str
    nonce: bytes
    instance_id: bytes
    implementation_id: bytes
    client_id: int
    security_lifecycle: int
    software_components: tuple[SoftwareComponent, ...]
    boot_seed: bytes | None = None
    certification_reference: str | None = None
    verification_service_indicator: str | None = None
    legacy: bool = False

    @property
    def lifecycle(self) -> SecurityLifecycle:
        """The major lifecycle state (``secured`` is 0x3000..0x30ff)."""
        return _LIFECYCLES[self.security_lifecycle >> 12]


@dataclass(frozen=True)
class PsaToken:
    """A parsed, not yet verified PSA token: its COSE message and its claims."""

    message: _cose.CoseMessage
    claims: PsaClaims


@dataclass(frozen=True)
class VerifiedPsaToken:
    """A PSA token whose signature or MAC verified under ``key``."""

    claims: PsaClaims
    key: VerifierKey


# claim -> (RFC 9783 / PSA 2.0.0 keys, PSA_IOT_PROFILE_1 key)
_KEYS: Final[dict[str, tuple[tuple[int, ...], int]]] = {
    "profile": ((265,), -75000),
    "client_id": ((2394,), -75001),
    "security_lifecycle": ((2395,), -75002),
    "implementation_id": ((2396,), -75003),
    "boot_seed": ((268, 2397), -75004),
    "certification_reference": ((2398,), -75005),
    "software_components": ((2399,), -75006),
    "nonce": ((10,), -75008),
    "instance_id": ((256,), -75009),
    "verification_service_indicator": ((2400,), -75010),
}
_NO_SW_MEASUREMENTS: Final = -75007
_NEW_KEYS: Final = frozenset(k for new, _ in _KEYS.values() for k in new)
_LEGACY_KEYS: Final = frozenset(range(-75010, -74999))


def _get(claims: Mapping[object, object], name: str, legacy: bool) -> object:
    new, old = _KEYS[name]
    present = [k for k in ((old,) if legacy else new) if k in claims]
    if len(present) > 1:
        raise DecodeError(f"PSA token: {name} appears under keys {present}")
    return claims[present[0]] if present else None


def _need(value: object, name: str) -> object:
    if value is None:
        raise DecodeError(f"PSA token: mandatory claim {name} is missing")
    return value


def _bytes(value: object, name: str, sizes: Iterable[int]) -> bytes:
    if not isinstance(value, bytes) or len(value) not in sizes:
        raise DecodeError(f"PSA token: {name} must be a byte string of {tuple(sizes)} bytes")
    return value


def _opt_text(value: object, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise DecodeError(f"PSA token: {name} must be text")
    return value


def _int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(f"PSA token: {name} must be an integer")
    return value


# RFC 9783 §4.4.1:
#   psa-software-component = {
#     ? &(measurement-type: 1) => text
#       &(measurement-value: 2) => psa-hash-type
#     ? &(version: 4) => text
#       &(signer-id: 5) => psa-hash-type       ; optional under PSA_IOT_PROFILE_1
#     ? &(measurement-desc: 6) => text
#   }
def _component(entry: object, legacy: bool) -> SoftwareComponent:
    if not isinstance(entry, dict):
        raise DecodeError("PSA token: a software component must be a map")
    value = _bytes(_need(entry.get(2), "measurement-value"), "measurement-value", _HASH_SIZES)
    signer = entry.get(5)
    if signer is not None or not legacy:
        signer = _bytes(_need(signer, "signer-id"), "signer-id", _HASH_SIZES)
    return SoftwareComponent(
        measurement_value=value,
        signer_id=signer,
        measurement_type=_opt_text(entry.get(1), "measurement-type"),
        version=_opt_text(entry.get(4), "version"),
        measurement_desc=_opt_text(entry.get(6), "measurement-desc"),
    )


def _components(
    value: object, claims: Mapping[object, object], legacy: bool
) -> tuple[SoftwareComponent, ...]:
    if value is None and legacy and claims.get(_NO_SW_MEASUREMENTS) == 1:
        return ()  # PSA_IOT_PROFILE_1: no-sw-measurements instead of the list
    if not isinstance(value, list) or not value:
        raise DecodeError("PSA token: software-components must be a non-empty array")
    return tuple(_component(entry, legacy) for entry in value)


# RFC 9783 §4 (claim keys in parentheses; PSA_IOT_PROFILE_1 keys -75000..-75010):
#   psa-token = {
#     psa-nonce (10)                        bstr .size 32/48/64
#     psa-instance-id (256)                 bstr .size 33, 0x01 (RAND UEID) || 32 bytes
#     ? psa-verification-service-indicator (2400)  text
#     psa-profile (265)                     text
#     psa-implementation-id (2396)          bstr .size 32
#     psa-client-id (2394)                  int
#     psa-lifecycle (2395)                  0xN000..0xN0ff, N = 0..6
#     ? psa-certification-reference (2398)  text
#     ? psa-boot-seed (268; 2397 in PSA 2.0.0)  bstr .size (8..32)
#     psa-software-components (2399)        [ + psa-software-component ]
#   }
def _claims(obj: object) -> PsaClaims:
    if not isinstance(obj, dict):
        raise DecodeError("PSA token: the payload must be a claims map")
    legacy = bool(_LEGACY_KEYS & obj.keys())
    if legacy and _NEW_KEYS & obj.keys():
        raise DecodeError("PSA token: mixes RFC 9783 and PSA_IOT_PROFILE_1 claim keys")

    def get(name: str) -> object:
        return _get(obj, name, legacy)

    profile = _need(get("profile"), "profile")
    if not isinstance(profile, str):
        raise DecodeError("PSA token: profile must be text")
    lifecycle = _int(_need(get("security_lifecycle"), "security-lifecycle"), "security-lifecycle")
    if not 0 <= lifecycle <= 0x60FF or lifecycle & 0x0F00:
        raise DecodeError(f"PSA token: security-lifecycle {lifecycle:#x} is not a defined state")
    boot_seed = get("boot_seed")
    return PsaClaims(
        profile=profile,
        nonce=_bytes(_need(get("nonce"), "nonce"), "nonce", _HASH_SIZES),
        instance_id=_instance_id(_need(get("instance_id"), "instance-id")),
        implementation_id=_bytes(
            _need(get("implementation_id"), "implementation-id"), "implementation-id", (32,)
        ),
        client_id=_int(_need(get("client_id"), "client-id"), "client-id"),
        security_lifecycle=lifecycle,
        software_components=_components(get("software_components"), obj, legacy),
        boot_seed=None if boot_seed is None else _bytes(boot_seed, "boot-seed", range(8, 33)),
        certification_reference=_opt_text(get("certification_reference"), "certification-ref"),
        verification_service_indicator=_opt_text(
            get("verification_service_indicator"), "verification-service-indicator"
        ),
        legacy=legacy,
    )


def _instance_id(value: object) -> bytes:
    ueid = _bytes(value, "instance-id", (33,))
    if ueid[0] != 0x01:  # RFC 9711 §4.2.1: type byte 0x01 = RAND
        raise DecodeError("PSA token: instance-id must be a RAND UEID (first byte 0x01)")
    return ueid


def parse_psa_token(data: bytes) -> PsaToken:
    """Parse a PSA token: a tagged COSE_Sign1 (18) or COSE_Mac0 (17) around the claims.
    DecodeError (UnsupportedError for a refused algorithm) when malformed."""
    message = _cose.parse_cose(data, what="PSA token")
    return PsaToken(message, _claims(_cbor.loads(message.payload, what="PSA claims")))


def verify_psa_token(
    token: PsaToken, keys: Iterable[VerifierKey], *, expected_nonce: bytes | None = None
) -> VerifiedPsaToken:
    """Verify the signature or MAC over the bytes received, with the protected algorithm
    bound to the key record (VerificationError); then, when given, the nonce (FreshnessError,
    byte-exact, RFC 9783 §4.1.1)."""
    key = _cose.verify_cose(token.message, keys)
    if expected_nonce is not None and not hmac.compare_digest(token.claims.nonce, expected_nonce):
        raise FreshnessError("PSA token: nonce does not match the challenge")
    return VerifiedPsaToken(token.claims, key)
