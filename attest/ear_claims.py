"""EAR claims-sets (draft-ietf-rats-ear) and AR4SI trustworthiness vectors: the model, and
its JSON and CBOR claims-set forms. Which names are written and read, and why, is the
naming decision documented in :mod:`attest.ear`; signed EARs (JWT, CWT) are built there.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from ._json import b64url_decode, b64url_encode
from .errors import DecodeError

__all__ = [
    "EAR_PROFILE",
    "VERAISON_EAR_PROFILE",
    "Ear",
    "Status",
    "Submod",
    "TrustVector",
    "VerifierId",
    "build_ear_cbor",
    "build_ear_json",
    "parse_ear_claims",
    "status_of",
    "tier_of",
]

EAR_PROFILE: Final = "tag:ietf.org,2026:rats/ear#03"
VERAISON_EAR_PROFILE: Final = "tag:github.com,2023:veraison/ear"


class Status(StrEnum):
    """AR4SI trust tiers, with their CBOR values as ``tier``."""

    NONE = "none"
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"

    @property
    def tier(self) -> int:
        return _TIERS[self]


_TIERS: Final = {
    Status.NONE: 0,
    Status.AFFIRMING: 2,
    Status.WARNING: 32,
    Status.CONTRAINDICATED: 96,
}
_BY_TIER: Final = {v: k for k, v in _TIERS.items()}


def tier_of(value: int) -> Status:
    """The tier of one AR4SI claim value: none -1..1, affirming 2..31 and -32..-2, warning
    32..95 and -96..-33, contraindicated 96..127 and -128..-97."""
    magnitude = -value - 1 if value < 0 else value
    if -1 <= value <= 1:
        return Status.NONE
    return (
        Status.AFFIRMING
        if magnitude < 32
        else Status.WARNING
        if magnitude < 96
        else Status.CONTRAINDICATED
    )


@dataclass(frozen=True)
class TrustVector:
    """The eight AR4SI trustworthiness claims (int8 each; 0 = no claim)."""

    instance_identity: int = 0
    configuration: int = 0
    executables: int = 0
    file_system: int = 0
    hardware: int = 0
    runtime_opaque: int = 0
    storage_opaque: int = 0
    sourced_data: int = 0

    def __post_init__(self) -> None:
        values = (
            self.instance_identity, self.configuration, self.executables, self.file_system,
            self.hardware, self.runtime_opaque, self.storage_opaque, self.sourced_data,
        )  # fmt: skip
        if all([type(v) is int for v in values]) and min(values) >= -128 and max(values) <= 127:
            return  # the common case, checked at once; the loop below names what is wrong
        for name in _NAMES:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not -128 <= value <= 127:
                raise RuntimeError(f"trustworthiness claim {name} must be an int8: {value!r}")

    @classmethod
    def every(cls, value: int) -> TrustVector:
        """Every claim set to ``value`` (e.g. 99: cryptographic validation failed)."""
        return cls(*([value] * len(_NAMES)))

    def claims(self) -> dict[str, int]:
        """The non-zero claims by field name."""
        return {n: v for n in _NAMES if (v := getattr(self, n))}


_NAMES: Final = tuple(f.name for f in fields(TrustVector))
_JSON_TV: Final = {n.replace("_", "-"): n for n in _NAMES}  # "instance-identity", ...


@functools.lru_cache(maxsize=1024)
def status_of(vector: TrustVector) -> Status:
    """The status a vector supports: its worst claim's tier (AR4SI), none when empty.

    Memoised: a vector is immutable and appraisals produce few distinct ones."""
    return max(
        (tier_of(v) for v in vector.claims().values()), key=_TIERS.__getitem__, default=Status.NONE
    )


def _supports(status: Status, vector: TrustVector) -> bool:
    return status is Status.NONE or status.tier >= status_of(vector).tier


@dataclass(frozen=True)
class VerifierId:
    """ear_verifier_id: who built the verifier, and which build."""

    developer: str
    build: str


@dataclass(frozen=True)
class Submod:
    """The appraisal of one attester (sub)module; ``extra`` holds extension claims by name."""

    status: Status
    vector: TrustVector = TrustVector()
    policy_ids: tuple[str, ...] = ()
    nonce: bytes | None = None
    extra: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not _supports(self.status, self.vector):
            raise RuntimeError(f"status {self.status} is better than the vector allows")
        if clash := _SUBMOD_NAMES & self.extra.keys():
            raise RuntimeError(f"extension claims shadow EAR claims: {sorted(clash)}")


@dataclass(frozen=True)
class Ear:
    """An EAR claims-set (draft-ietf-rats-ear); ``status`` is the optional top-level one."""

    iat: int
    verifier_id: VerifierId
    submods: Mapping[str, Submod]
    profile: str = EAR_PROFILE
    exp: int | None = None
    nonce: bytes | None = None
    raw_evidence: bytes | None = None
    status: Status | None = None


# claim -> (draft JSON name, Veraison JSON name, CBOR key)
_STATUS = ("ear_status", "ear.status", 1000)
_VECTOR = ("ear_trustworthiness_vector", "ear.trustworthiness-vector", 1001)
_RAW = ("ear_raw_evidence", "ear.raw-evidence", 1002)
_POLICY = ("ear_appraisal_policy_ids", "ear.appraisal-policy-id", 1003)
_VERIFIER = ("ear_verifier_id", "ear.verifier-id", 1004)
_NONCE = ("eat_nonce", "eat_nonce", 10)
_SUBMOD_NAMES: Final = frozenset(n for c in (_STATUS, _VECTOR, _POLICY, _NONCE) for n in c[:2])


def _fail(msg: str) -> DecodeError:
    return DecodeError(f"EAR: {msg}")


class _Reader:
    """One claims map in one form: JSON (draft or Veraison names) or CBOR (draft keys)."""

    def __init__(self, obj: object, cbor: bool, what: str) -> None:
        if not isinstance(obj, dict):
            raise _fail(f"{what} must be a map")
        self.obj, self.cbor, self.what = obj, cbor, what
        self.used: set[object] = set()

    def get(self, claim: tuple[str, str, int]) -> object:
        keys = (claim[2],) if self.cbor else tuple(dict.fromkeys(claim[:2]))
        present = [k for k in keys if k in self.obj]
        if len(present) > 1:
            raise _fail(f"{self.what} carries both {present[0]!r} and {present[1]!r}")
        self.used.update(keys)
        return self.obj[present[0]] if present else None

    def integer(self, claim: tuple[str, str, int]) -> int | None:
        value = self.get(claim)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise _fail(f"{self.what}: {claim[0]} must be an integer")
        return value

    def blob(self, claim: tuple[str, str, int], lo: int = 0, hi: int = 1 << 20) -> bytes | None:
        value = self.get(claim)
        if value is None:
            return None
        data = value if self.cbor else b64url_decode(value, f"EAR: {claim[0]}")
        if not isinstance(data, bytes) or not lo <= len(data) <= hi:
            raise _fail(f"{self.what}: {claim[0]} must be {lo}..{hi} bytes")
        return data

    def status(self, claim: tuple[str, str, int]) -> Status | None:
        value = self.get(claim)
        if value is None:
            return None
        if self.cbor and type(value) is int and value in _BY_TIER:
            return _BY_TIER[value]
        if not self.cbor and isinstance(value, str) and value in frozenset(Status):
            return Status(value)
        raise _fail(f"{self.what}: {value!r} is not a trust tier")

    def vector(self) -> TrustVector:
        value = self.get(_VECTOR)
        if value is None:
            return TrustVector()
        names = dict(enumerate(_NAMES)) if self.cbor else _JSON_TV
        if not isinstance(value, dict) or not value.keys() <= names.keys():
            raise _fail(f"{self.what}: unknown trustworthiness claims in {value!r}")
        for v in value.values():
            if not isinstance(v, int) or isinstance(v, bool) or not -128 <= v <= 127:
                raise _fail(f"{self.what}: trustworthiness claims are int8, not {v!r}")
        return TrustVector(**{names[k]: v for k, v in value.items()})

    def policies(self) -> tuple[str, ...]:
        value = self.get(_POLICY)
        if value is None:
            return ()
        items = [value] if isinstance(value, str) and _POLICY[1] in self.obj else value
        if not isinstance(items, list) or not items or not all(isinstance(p, str) for p in items):
            raise _fail(f"{self.what}: appraisal policy ids must be a non-empty text array")
        return tuple(items)


def _submod(name: str, obj: object, cbor: bool) -> Submod:
    r = _Reader(obj, cbor, f"submod {name!r}")
    status = r.status(_STATUS)
    if status is None:
        raise _fail(f"submod {name!r} has no status")
    vector = r.vector()
    if not _supports(status, vector):
        raise _fail(f"submod {name!r}: status {status} is better than its vector allows")
    policies, nonce = r.policies(), r.blob(_NONCE, 8, 64)
    extra = {k: v for k, v in r.obj.items() if isinstance(k, str) and k not in r.used}
    if clash := _SUBMOD_NAMES & extra.keys():  # text names for what CBOR keys by number
        raise _fail(f"submod {name!r}: {sorted(clash)} must use their CBOR keys")
    return Submod(status, vector, policies, nonce, MappingProxyType(extra))


def parse_ear_claims(obj: object) -> Ear:
    """Read a decoded EAR claims-set: a CBOR map (int keys, profile under 265) or a JSON
    object (draft or Veraison names). DecodeError when malformed or a mandatory claim
    (profile, iat, verifier id, submods with a status each) is missing."""
    if not isinstance(obj, dict):
        raise _fail("the claims-set must be a map")
    cbor = 265 in obj
    r = _Reader(obj, cbor, "claims-set")
    profile = r.get(("eat_profile", "eat_profile", 265))
    if not isinstance(profile, str):
        raise _fail("eat_profile (text) is missing")
    iat = r.integer(("iat", "iat", 6))
    if iat is None:
        raise _fail("iat is missing")
    vid = r.get(_VERIFIER)
    dev, build = (0, 1) if cbor else ("developer", "build")
    if (
        not isinstance(vid, dict)
        or not isinstance(vid.get(dev), str)
        or not isinstance(vid.get(build), str)
    ):
        raise _fail("ear_verifier_id {developer, build} is missing")
    submods = r.get(("submods", "submods", 266))
    if not isinstance(submods, dict) or not submods or not all(isinstance(k, str) for k in submods):
        raise _fail("submods must be a non-empty map from text names")
    return Ear(
        iat=iat,
        verifier_id=VerifierId(vid[dev], vid[build]),
        submods=MappingProxyType({k: _submod(k, v, cbor) for k, v in submods.items()}),
        profile=profile,
        exp=r.integer(("exp", "exp", 4)),
        nonce=r.blob(_NONCE, 8, 64),
        raw_evidence=r.blob(_RAW),
        status=r.status(_STATUS),
    )


def _build(ear: Ear, cbor: bool) -> dict[object, object]:
    if ear.profile != EAR_PROFILE:
        raise RuntimeError(f"this module writes {EAR_PROFILE} names, not {ear.profile!r}")
    i = 2 if cbor else 0

    def blob(data: bytes) -> object:
        return data if cbor else b64url_encode(data)

    def status(s: Status) -> object:
        return s.tier if cbor else str(s)

    vid = {0: ear.verifier_id.developer, 1: ear.verifier_id.build}
    out: dict[object, object] = {
        265 if cbor else "eat_profile": ear.profile,
        6 if cbor else "iat": ear.iat,
        _VERIFIER[i]: vid if cbor else {"developer": vid[0], "build": vid[1]},
    }
    optional = {4 if cbor else "exp": ear.exp, _NONCE[i]: ear.nonce, _RAW[i]: ear.raw_evidence}
    for key, value in optional.items():
        if value is not None:
            out[key] = blob(value) if isinstance(value, bytes) else value
    if ear.status is not None:
        out[_STATUS[i]] = status(ear.status)
    submods: dict[object, object] = {}
    for name, sub in ear.submods.items():
        entry: dict[object, object] = {_STATUS[i]: status(sub.status)}
        entry.update(sub.extra.items())
        if claims := sub.vector.claims():
            entry[_VECTOR[i]] = {
                (_NAMES.index(n) if cbor else n.replace("_", "-")): v for n, v in claims.items()
            }
        if sub.policy_ids:
            entry[_POLICY[i]] = list(sub.policy_ids)
        if sub.nonce is not None:
            entry[_NONCE[i]] = blob(sub.nonce)
        submods[name] = entry
    out[266 if cbor else "submods"] = submods
    return out


def build_ear_json(ear: Ear) -> dict[str, object]:
    """The JSON claims-set (draft names) for a JWT."""
    return {str(k): v for k, v in _build(ear, cbor=False).items()}


def build_ear_cbor(ear: Ear) -> dict[object, object]:
    """The CBOR claims-set (draft keys) for a CWT."""
    return _build(ear, cbor=True)
