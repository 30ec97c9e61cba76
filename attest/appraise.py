"""Appraisal: verified evidence against reference values → an AR4SI trust vector and status.

A bad device is a result, not an exception (STYLE.md): every failure becomes a contraindicated
appraisal naming why. Crypto or freshness failures give 99 in every claim (AR4SI: "cryptographic
validation of evidence failed"), as Veraison does (notes/attestation.md §2.9).

Reference values are plain digests supplied by the caller, who derives them from the SUIT
manifest the device should run (DESIGN.md "How a manifest becomes a reference value"):

- TPM devices measure each installed image into one PCR (default 16, SHA-256 bank) by extending
  its SUIT image digest, and log ``{pcr, alg, digest, component_id, manifest_digest,
  sequence_number}`` in the compact event log. The log must replay to the quoted PCRs before
  any event is believed; then every expected image must be measured with an acceptable digest.
- PSA / EAT devices report software components whose measurement values must be the images'
  digests.

AR4SI values used (draft-ietf-rats-ar4si): 2 affirming (approved); 32 known-vulnerable /
warning; 33 unrecognized executables (warning tier); 96 contraindicated; 99 crypto failure.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import NamedTuple

from .ear_claims import Status, TrustVector, status_of
from .eat import digest_name, parse_eat, verify_eat
from .errors import AttestError, DecodeError, FreshnessError, UnsupportedError
from .eventlog import EventLog, parse_event_log, verify_replay
from .keys import VerifierKey
from .psa import SecurityLifecycle, parse_psa_token, verify_psa_token
from .quote import PcrValues, rebooted_since, verify_quote
from .tpm import AkKey, ClockInfo, PublicKey, TpmAlg

__all__ = [
    "Appraisal",
    "ExpectedImage",
    "Policy",
    "ReferenceValues",
    "UnknownComponents",
    "appraise_eat",
    "appraise_psa",
    "appraise_tpm",
]

APPROVED = 2
WARN_VULNERABLE = 32
WARN_UNRECOGNIZED = 33
CONTRAINDICATED = 96
CRYPTO_FAILED = 99
# TCG PC Client Platform TPM Profile (PTP), PCR attributes: PCR 16 (debug) and PCR 23
# (application support) are resettable from locality 0, the locality ordinary software uses;
# PCRs 17-22 (dynamic root of trust) from localities 2-4, which firmware TPMs and some SPI TPMs
# do not keep from software. Only 0-15, reset by a TPM reset alone, prove what booted.
RESETTABLE_PCRS = frozenset(range(16, 24))


class UnknownComponents(StrEnum):
    """What a measurement that no reference value names does to the verdict."""

    WARN = "warn"
    CONTRAINDICATE = "contraindicate"


@dataclass(frozen=True)
class ExpectedImage:
    """One component of the expected manifest and the digests acceptable for it (several for
    A/B slots). Digests are (hashlib name, bytes)."""

    component_id: tuple[bytes, ...]
    digests: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class ReferenceValues:
    """What the device must run: images (from the SUIT manifest) and, for callers who have
    golden values instead (the CLI's ``--expect``), PCR values that must be quoted exactly."""

    images: tuple[ExpectedImage, ...] = ()
    manifest_digest: bytes | None = None
    pcr: int = 16
    bank: TpmAlg = TpmAlg.SHA256
    expected_pcrs: Mapping[tuple[TpmAlg, int], bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """``mismatch``: what a component measured with a digest other than the expected one does.
    Reference values derived from the manifest the device was told to install say exactly what
    must run, so the default contraindicates (DESIGN.md); ``WARN`` gives Veraison's PSA verdict
    for CoRIM reference values (executables 33, vector P2).

    ``allow_resettable_pcrs``: images measured into a PCR that can be reset without a TPM reset
    (16-23) are at best a warning unless this is set (ADR 0006): software that can reset such a
    PCR can extend the expected digests whatever actually runs. Simulations on swtpm set it."""

    allow_sha1: bool = False
    unknown_components: UnknownComponents = UnknownComponents.WARN
    mismatch: UnknownComponents = UnknownComponents.CONTRAINDICATE
    policy_id: str = "suitsrv/default"
    allow_resettable_pcrs: bool = False


@dataclass(frozen=True)
class Appraisal:
    """The outcome: status (never better than the worst claim), vector, and why."""

    status: Status
    vector: TrustVector
    reasons: tuple[str, ...]
    evidence: str
    clock: ClockInfo | None = None
    rebooted: bool | None = None
    measured: tuple[tuple[str, str], ...] = field(default=())  # (component, digest hex)


def _failed(evidence: str, reason: str) -> Appraisal:
    vector = TrustVector.every(CRYPTO_FAILED)
    return Appraisal(status_of(vector), vector, (reason,), evidence)


def _matches(digest: tuple[str, bytes], acceptable: Iterable[tuple[str, bytes]]) -> bool:
    name, got = digest
    for alg, value in acceptable:
        if alg == name and len(value) == len(got) and hmac.compare_digest(value, got):
            return True
    return False


def _compare_images(
    measured: Sequence[tuple[tuple[bytes, ...] | None, tuple[str, bytes]]],
    reference: ReferenceValues | None,
    policy: Policy,
) -> tuple[int, list[str]]:
    """executables claim and reasons from (component id or None, digest) measurements.

    A component measured under its own identifier must have only acceptable digests: a second,
    unexpected measurement of the same component is a mismatch even if another one matches
    (firmware that also measures the expected image proves nothing). Measurements without an
    identifier, or under names no reference uses (PSA types, EAT names), are matched by
    digest."""
    if reference is None:
        return WARN_UNRECOGNIZED, ["no reference values: the expected firmware is unknown"]
    reasons: list[str] = []
    claim = APPROVED
    referenced = {image.component_id for image in reference.images}
    anonymous = [d for cid, d in measured if cid is None or cid not in referenced]
    mismatch = WARN_UNRECOGNIZED if policy.mismatch is _WARN else CONTRAINDICATED
    for image in reference.images:
        named = [d for cid, d in measured if cid == image.component_id]
        if named:
            if all([_matches(d, image.digests) for d in named]):
                continue
            got = ", ".join(v.hex() for _, v in named)
            reasons.append(f"component {_component(image)}: measured {got}, expected "
                           f"{_expected(image)}")  # fmt: skip
            claim = max(claim, mismatch)
        elif not any(_matches(d, image.digests) for d in anonymous):
            reasons.append(f"component {_component(image)}: not measured, expected "
                           f"{_expected(image)}")  # fmt: skip
            claim = CONTRAINDICATED
    known: list[tuple[str, bytes]] | None = None
    for cid, digest in measured:
        if cid in referenced:
            continue  # judged above
        if known is None:
            known = [d for image in reference.images for d in image.digests]
        if _matches(digest, known):
            continue  # judged above
        where = "/".join(p.hex() for p in cid) if cid else "a component"
        reasons.append(f"{where} measured {digest[1].hex()}, which no reference value names")
        if claim == APPROVED:
            bad = policy.unknown_components is UnknownComponents.CONTRAINDICATE
            claim = CONTRAINDICATED if bad else WARN_UNRECOGNIZED
    return claim, reasons


# Enum members as module constants: a class attribute lookup on an Enum costs a metaclass call.
_WARN, _SHA1, _SHA256 = UnknownComponents.WARN, TpmAlg.SHA1, TpmAlg.SHA256


def _component(image: ExpectedImage) -> str:
    return "/".join(p.hex() for p in image.component_id) or "(component)"


def _expected(image: ExpectedImage) -> str:
    return ", ".join(v.hex() for _, v in image.digests)


_TPM_HASH_NAMES = {TpmAlg.SHA1: "sha1", TpmAlg.SHA256: "sha256", TpmAlg.SHA384: "sha384",
                   TpmAlg.SHA512: "sha512"}  # fmt: skip


def appraise_tpm(
    attest: bytes,
    signature: bytes,
    ak: PublicKey | AkKey,
    *,
    nonce: bytes,
    pcrs: PcrValues | None,
    event_log: bytes | None,
    reference: ReferenceValues | None,
    previous: ClockInfo | None = None,
    policy: Policy = Policy(),
) -> Appraisal:
    """Appraise a TPM quote (with its PCR values and, usually, the compact event log).
    ``pcrs=None`` checks the quote alone: signature, nonce, clock; measurements stay unknown."""
    try:
        quote = verify_quote(attest, signature, ak, nonce=nonce, pcrs=pcrs, previous=previous,
                             allow_sha1=policy.allow_sha1)  # fmt: skip
    except FreshnessError as exc:
        return _failed("tpm-quote", f"not fresh: {exc}")
    except UnsupportedError as exc:
        return _failed("tpm-quote", f"refused by policy: {exc}")
    except AttestError as exc:
        return _failed("tpm-quote", f"quote does not verify: {exc}")
    clock = quote.attest.clock_info
    reasons: list[str] = []
    # The claims, as ints until the one TrustVector at the end (its checks run once).
    hardware = APPROVED if isinstance(ak, PublicKey) else 0
    configuration = 0
    if isinstance(ak, AkKey):
        reasons.append("AK given as PEM: its TPM attributes were not checked")
    shown: tuple[tuple[str, str], ...] = ()
    if pcrs is None and (event_log is not None or reference is not None):
        # Only pcrDigest is signed; without the values nothing can be compared with it.
        executables, why = WARN_UNRECOGNIZED, ["no PCR values supplied: measurements unchecked"]
    elif event_log is not None:
        try:
            log: EventLog = verify_replay(parse_event_log(event_log), quote.pcrs,
                                          require_all=True)  # fmt: skip
        except (DecodeError, AttestError) as exc:
            return replace(_failed("tpm-quote", f"event log: {exc}"), clock=clock)
        judged = _judge_log(log, reference, policy)
        configuration, shown = judged.configuration, judged.shown
        reasons.extend(judged.reasons)
        executables, why = judged.executables, list(judged.why)
    elif reference is not None and reference.images:
        executables, why = _expected_pcr(quote.pcrs, reference)
    elif reference is not None and reference.expected_pcrs:
        executables, why = APPROVED, []  # decided by the golden PCR values just below
    else:
        executables, why = WARN_UNRECOGNIZED, ["no event log and no reference values"]
    if executables == APPROVED and reference is not None and reference.images:
        executables = _resettable(reference.pcr, policy, why)
    if pcrs is not None and reference is not None and reference.expected_pcrs:
        pcr_claim, pcr_why = _golden_pcrs(quote.pcrs, reference.expected_pcrs)
        executables = pcr_claim if not reference.images else max(executables, pcr_claim)
        why = (why if reference.images else []) + pcr_why
    if quote.signature is not None and quote.signature.hash_alg is _SHA1:
        configuration = max(configuration, WARN_VULNERABLE)
        reasons.append("SHA-1 evidence accepted by policy")
    vector, status = _tpm_vector(configuration, executables, hardware)
    return Appraisal(status, vector, tuple(reasons + why), "tpm-quote", clock,
                     rebooted_since(previous, clock) if previous else None, shown)  # fmt: skip


def _resettable(pcr: int, policy: Policy, why: list[str]) -> int:
    """The executables claim of images that all matched in ``pcr``: approved, unless software
    could have reset that PCR and extended the expected digests itself (ADR 0006)."""
    if pcr not in RESETTABLE_PCRS or policy.allow_resettable_pcrs:
        return APPROVED
    why.append(
        f"the images are measured into PCR {pcr}, which software can reset (PC Client "
        "PTP): the quote cannot vouch for what runs (policy allow_resettable_pcrs off)"
    )
    return WARN_VULNERABLE


class _LogJudgement(NamedTuple):
    """What a replayed log says against reference values and policy (``_judge_log``)."""

    configuration: int
    reasons: tuple[str, ...]  # logged manifest mismatches
    executables: int
    why: tuple[str, ...]
    shown: tuple[tuple[str, str], ...]  # Appraisal.measured


_JUDGED: dict[tuple[object, ...], _LogJudgement] = {}
_JUDGED_MAX = 256


def _judge_log(log: EventLog, reference: ReferenceValues | None, policy: Policy) -> _LogJudgement:
    """The measurements of a log that replayed to the quoted PCRs, judged against the
    reference images. A pure function of the log's bytes (appraise_tpm parses them itself),
    the reference images and the policy: memoised on those, since a fleet on one release
    sends the same log against the same release. The replay is checked before, every time."""
    ref = None if reference is None else (reference.images, reference.manifest_digest,
                                          reference.bank, reference.pcr)  # fmt: skip
    key = (log.raw, ref, policy)
    judged = _JUDGED.get(key)
    if judged is None:
        judged = _judge(log, reference, policy)
        if len(_JUDGED) >= _JUDGED_MAX:
            _JUDGED.clear()  # a crude bound: a fleet has few (log, release) pairs at a time
        _JUDGED[key] = judged
    return judged


def _judge(log: EventLog, reference: ReferenceValues | None, policy: Policy) -> _LogJudgement:
    bank = reference.bank if reference else _SHA256
    pcr = reference.pcr if reference else 16
    expected_manifest = reference.manifest_digest if reference else None
    measured: list[tuple[tuple[bytes, ...] | None, tuple[str, bytes]]] = []
    reasons: list[str] = []
    configuration = 0
    for event in log.events:
        digest = event.digests.get(bank)
        if event.pcr == pcr and digest is not None:
            measured.append((event.component_id, (_TPM_HASH_NAMES[bank], digest)))
            if (
                expected_manifest
                and event.manifest_digest
                and not hmac.compare_digest(event.manifest_digest, expected_manifest)
            ):
                reasons.append(
                    f"logged manifest {event.manifest_digest.hex()} is not the expected "
                    f"{expected_manifest.hex()}"
                )
                configuration = CONTRAINDICATED
    executables, why = _compare_images(measured, reference, policy)
    shown = tuple(("/".join(p.hex() for p in (c or ())), d.hex()) for c, (_, d) in measured)
    return _LogJudgement(configuration, tuple(reasons), executables, tuple(why), shown)


@functools.lru_cache(maxsize=256)
def _tpm_vector(configuration: int, executables: int, hardware: int) -> tuple[TrustVector, Status]:
    # A vector is an immutable value drawn from a few claim values: built and judged once each.
    vector = TrustVector(instance_identity=APPROVED, configuration=configuration,
                         executables=executables, hardware=hardware)  # fmt: skip
    return vector, status_of(vector)


def _golden_pcrs(
    quoted: Mapping[TpmAlg, Mapping[int, bytes]], expected: Mapping[tuple[TpmAlg, int], bytes]
) -> tuple[int, list[str]]:
    reasons = []
    for (bank, index), value in sorted(expected.items()):
        got = quoted.get(bank, {}).get(index)
        if got is None:
            reasons.append(f"{bank.name.lower()}:{index} was not quoted")
        elif not hmac.compare_digest(got, value):
            reasons.append(f"{bank.name.lower()}:{index} is {got.hex()}, expected {value.hex()}")
    return (CONTRAINDICATED if reasons else APPROVED), reasons


def _expected_pcr(
    quoted: Mapping[TpmAlg, Mapping[int, bytes]], reference: ReferenceValues
) -> tuple[int, list[str]]:
    """Without a log: the PCR must equal the extends of one digest per image, in order."""
    value = quoted.get(reference.bank, {}).get(reference.pcr)
    if value is None:
        return CONTRAINDICATED, [f"PCR {reference.pcr} was not quoted"]
    if any(len(image.digests) != 1 for image in reference.images):
        return WARN_UNRECOGNIZED, ["several acceptable images and no event log to tell them apart"]
    name = _TPM_HASH_NAMES[reference.bank]
    pcr = bytes(hashlib.new(name).digest_size)
    for image in reference.images:
        pcr = hashlib.new(name, pcr + image.digests[0][1]).digest()
    if hmac.compare_digest(pcr, value):
        return APPROVED, []
    return CONTRAINDICATED, [f"PCR {reference.pcr} is {value.hex()}, expected {pcr.hex()}"]


def _psa_component(measurement_type: str | None) -> tuple[bytes, ...] | None:
    return (measurement_type.encode(),) if measurement_type else None


def appraise_psa(
    data: bytes,
    keys: Sequence[VerifierKey],
    *,
    nonce: bytes,
    reference: ReferenceValues | None,
    policy: Policy = Policy(),
) -> Appraisal:
    """Appraise a PSA attestation token (RFC 9783; AR4SI mapping of its §"AR4SI mappings")."""
    try:
        claims = verify_psa_token(parse_psa_token(data), keys, expected_nonce=nonce).claims
    except FreshnessError as exc:
        return _failed("psa-token", f"not fresh: {exc}")
    except AttestError as exc:
        return _failed("psa-token", f"token does not verify: {exc}")
    secured = claims.lifecycle is SecurityLifecycle.SECURED
    identity = APPROVED if secured else CONTRAINDICATED
    # A software component is named by its measurement type ("BL", "PRoT") when it has one.
    measured = [
        (_psa_component(c.measurement_type), (name, c.measurement_value))
        for c in claims.software_components
        if (name := {32: "sha256", 48: "sha384", 64: "sha512"}.get(len(c.measurement_value)))
    ]
    executables, why = _compare_images(measured, reference, policy)
    reasons = ([] if secured else [f"security lifecycle is {claims.lifecycle}"]) + why
    vector = TrustVector(instance_identity=identity, hardware=APPROVED, executables=executables,
                         runtime_opaque=identity, storage_opaque=identity)  # fmt: skip
    return Appraisal(status_of(vector), vector, tuple(reasons), "psa-token",
                     measured=tuple(("", d.hex()) for _, (_, d) in measured))  # fmt: skip


def appraise_eat(
    data: bytes,
    keys: Sequence[VerifierKey],
    *,
    nonce: bytes,
    reference: ReferenceValues | None,
    policy: Policy = Policy(),
) -> Appraisal:
    """Appraise an EAT (RFC 9711) whose measured components carry the images' digests."""
    try:
        claims = verify_eat(parse_eat(data), keys, expected_nonce=nonce).claims
    except FreshnessError as exc:
        return _failed("eat", f"not fresh: {exc}")
    except AttestError as exc:
        return _failed("eat", f"token does not verify: {exc}")
    measured: list[tuple[tuple[bytes, ...] | None, tuple[str, bytes]]] = []
    for m in claims.measurements:
        if m.component is not None and (name := digest_name(m.component.digest_alg)):
            measured.append(((m.component.name.encode(),), (name, m.component.digest)))
    executables, why = _compare_images(measured, reference, policy)
    vector = TrustVector(instance_identity=APPROVED, executables=executables)
    shown = tuple((c[0].decode(), d.hex()) for c, (_, d) in measured if c)
    return Appraisal(status_of(vector), vector, tuple(why), "eat", measured=shown)
