"""``suitsrv attest quote | token``: appraise evidence files, print the EAR claims (unsigned).

A stable interface for other tools (docs/cli.md): exit 0 only when the verdict is affirming,
1 for any other verdict (evidence that does not parse or verify included), 2 for a usage error.
What configures the judgement (AK, keys, nonce, reference values) is the caller's: a bad one is
a usage error. What is judged (quote, signature, PCR values, event log, token) is evidence: a
bad one is a verdict. The claims are unsigned: the service signs the EARs it issues.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from dataclasses import replace
from pathlib import Path

from attest.appraise import (
    Appraisal,
    ExpectedImage,
    Policy,
    ReferenceValues,
    appraise_eat,
    appraise_psa,
    appraise_tpm,
)
from attest.ear_claims import (
    Ear,
    Status,
    Submod,
    TrustVector,
    VerifierId,
    build_ear_json,
    status_of,
    tier_of,
)
from attest.eat import parse_eat
from attest.errors import AttestError, DecodeError
from attest.keys import MAC_HASH, VerifierKey, hmac_key, key_from_jwk, key_from_pem
from attest.psa import parse_psa_token
from attest.quote import PcrValues, parse_pcr_file, pcr_values_from_mapping
from attest.tpm import (
    AkKey,
    PublicKey,
    TpmAlg,
    digest_size,
    parse_attest,
    parse_public,
    public_from_pem,
)
from suitsrv import __version__

from .keys import UsageError

__all__ = ["add_attest"]

_MAX_FILE = 16 << 20  # larger than any quote, token or event log we accept
_CRYPTO_FAILED = 99  # AR4SI: cryptographic validation of the evidence failed
_BANKS = {"sha1": TpmAlg.SHA1, "sha256": TpmAlg.SHA256, "sha384": TpmAlg.SHA384,
          "sha512": TpmAlg.SHA512}  # fmt: skip
_EXPECT = re.compile(r"(sha1|sha256|sha384|sha512):(0|[1-9][0-9]?)=([0-9a-fA-F]+)")
_DIGESTS = {32: "sha256", 48: "sha384", 64: "sha512"}  # PSA/EAT digests named by length
_UNCHALLENGED = ("freshness not checked: no --nonce was given, so the token may be a replay "
                 "(its own nonce was used to check the rest)")  # fmt: skip


def _read(path: str, what: str) -> bytes:
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(_MAX_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > _MAX_FILE:
        raise UsageError(f"{what} {path} is over the {_MAX_FILE}-byte limit")
    return data


def _hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise UsageError(f"{what}: not hex: {text!r}") from exc


def _nonce(text: str) -> bytes:
    nonce = _hex(text, "--nonce")
    if not 1 <= len(nonce) <= 64:  # TPM2B_DATA and eat_nonce both stop at 64 bytes
        raise UsageError(f"--nonce is {len(nonce)} bytes: give 1 to 64")
    return nonce


def _load_ak(path: str) -> PublicKey | AkKey:
    data = _read(path, "AK")
    try:
        # PEM: attributes unknown (the appraisal says so); binary: TPM2B_PUBLIC or TPMT_PUBLIC,
        # whose attributes verify_quote checks (require_ak).
        return public_from_pem(data) if b"-----BEGIN" in data else parse_public(data)
    except AttestError as exc:
        raise UsageError(f"{path}: not a usable AK (PEM or TPM2B_PUBLIC): {exc}") from exc


def _load_pcrs(path: str) -> PcrValues:
    """JSON ``{"sha256": {"16": "<hex>"}}`` or tpm2-tools' ``-o`` file (its first byte is the
    selection count, at most 16, so never ``{``). DecodeError when malformed."""
    data = _read(path, "PCR file")
    if not data.lstrip().startswith(b"{"):
        return parse_pcr_file(data)
    try:
        obj = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DecodeError(f"not JSON: {exc}") from exc
    return pcr_values_from_mapping(obj)


def _expected_pcrs(items: list[str]) -> dict[tuple[TpmAlg, int], bytes]:
    expected: dict[tuple[TpmAlg, int], bytes] = {}
    for item in items:
        match = _EXPECT.fullmatch(item)
        if match is None or len(match[3]) % 2:
            raise UsageError(f"--expect {item!r}: give BANK:PCR=HEX, e.g. sha256:16=<64 hex>")
        bank, pcr, value = _BANKS[match[1]], int(match[2]), bytes.fromhex(match[3])
        if pcr > 31 or len(value) != digest_size(bank):
            raise UsageError(f"--expect {item!r}: PCR 0..31 and a {digest_size(bank)}-byte value")
        if expected.setdefault((bank, pcr), value) != value:
            raise UsageError(f"--expect gives {match[1]}:{pcr} two different values")
    return expected


def _expected_images(items: list[str]) -> tuple[ExpectedImage, ...]:
    """NAME=HEX (repeat a NAME for A/B slots) → one ExpectedImage per name."""
    images: dict[str, list[tuple[str, bytes]]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        digest = _hex(text, f"--expect-digest {item!r}") if sep and name else b""
        if len(digest) not in _DIGESTS:
            raise UsageError(f"--expect-digest {item!r}: give NAME=HEX of a SHA-256/384/512")
        images.setdefault(name, []).append((_DIGESTS[len(digest)], digest))
    return tuple(ExpectedImage((n.encode(),), tuple(d)) for n, d in images.items())


def _load_key(spec: str) -> VerifierKey:
    """``hmac:HEX``, or a file holding a PEM public key or a JWK."""
    try:
        if spec.startswith("hmac:"):
            secret = _hex(spec[5:], "--key hmac")
            # RFC 9053 §3.1: the secret must be at least as long as the hash output.
            fits = [a for a, h in MAC_HASH.items() if hashlib.new(h).digest_size <= len(secret)]
            if not fits:
                raise UsageError(f"--key hmac: {len(secret)} bytes is too short (32 at least)")
            return hmac_key(secret, fits)
        data = _read(spec, "key")
        if data.lstrip().startswith(b"{"):
            jwk = json.loads(data)
            if not isinstance(jwk, dict):
                raise UsageError(f"{spec}: a JWK is a JSON object")
            return key_from_jwk(jwk, name=spec)
        if b"-----BEGIN" in data:
            return key_from_pem(data, name=spec)
    except (AttestError, ValueError) as exc:  # ValueError: JSON
        raise UsageError(f"{spec}: not a usable key: {exc}") from exc
    raise UsageError(f"{spec}: not a PEM public key or a JWK")


def _failed(evidence: str, reason: str) -> Appraisal:
    vector = TrustVector.every(_CRYPTO_FAILED)
    return Appraisal(status_of(vector), vector, (reason,), evidence)


def _report(appraisal: Appraisal, policy: Policy, nonce: bytes | None, as_json: bool) -> int:
    extra = {"suitsrv.evidence": appraisal.evidence, "suitsrv.reasons": list(appraisal.reasons)}
    # eat_nonce is 8..64 bytes (RFC 9711 §4.1); a shorter TPM nonce is left out of the claims.
    shown = nonce if nonce is not None and len(nonce) >= 8 else None
    submod = Submod(appraisal.status, appraisal.vector, (policy.policy_id,), shown, extra)
    ear = Ear(iat=int(time.time()), verifier_id=VerifierId("suitsrv", __version__),
              submods={"device": submod}, nonce=shown)  # fmt: skip
    if as_json:
        print(json.dumps(build_ear_json(ear)))
    else:
        print(f"status: {appraisal.status} ({appraisal.evidence}, unsigned)")
        for name, value in appraisal.vector.claims().items():
            print(f"  {name.replace('_', '-')}: {value} ({tier_of(value)})")
        for reason in appraisal.reasons:
            print(f"  - {reason}")
    return 0 if appraisal.status is Status.AFFIRMING else 1


def _policy(allow_sha1: bool) -> Policy:
    return Policy(allow_sha1=True, policy_id="suitsrv/allow-sha1") if allow_sha1 else Policy()


def _quote(args: argparse.Namespace) -> int:
    ak = _load_ak(args.ak)
    attest = _read(args.attest, "quote")
    signature = _read(args.signature, "signature")
    nonce = _nonce(args.nonce)
    expected = _expected_pcrs(args.expect)
    log = _read(args.event_log, "event log") if args.event_log else None
    policy = _policy(args.allow_sha1)
    reference = ReferenceValues(expected_pcrs=expected) if expected else None
    if args.pcrs is None:
        # appraise_tpm needs the values the quote signs; only a quote selecting none can go
        # without (an unparseable quote is the appraisal's to report).
        try:
            signed = [f"{s.hash_alg.name.lower()}:{p}" for s in parse_attest(attest).pcr_select
                      for p in s.pcrs]  # fmt: skip
        except AttestError:
            signed = []
        if signed:
            raise UsageError(f"give --pcrs FILE: the quote signs {', '.join(signed)}")
        if expected or log is not None:
            raise UsageError("--expect and --event-log need --pcrs FILE")
        pcrs = PcrValues({})
    else:
        try:
            pcrs = _load_pcrs(args.pcrs)
        except AttestError as exc:
            return _report(_failed("tpm-quote", f"PCR file: {exc}"), policy, nonce, args.json)
    appraisal = appraise_tpm(attest, signature, ak, nonce=nonce, pcrs=pcrs, event_log=log,
                             reference=reference, policy=policy)  # fmt: skip
    return _report(appraisal, policy, nonce, args.json)


def _is_psa(data: bytes) -> bool:
    try:
        parse_psa_token(data)
    except AttestError:
        return False
    return True


def _own_nonce(data: bytes, psa: bool) -> bytes:
    """The token's own nonce, to check everything but freshness; b"" when there is none."""
    try:
        if psa:
            return parse_psa_token(data).claims.nonce
        return next(iter(parse_eat(data).claims.nonce), b"")
    except AttestError:
        return b""  # the appraisal reports why the token does not parse


def _token(args: argparse.Namespace) -> int:
    data = _read(args.file, "token")
    keys = [_load_key(k) for k in args.key]
    nonce = _nonce(args.nonce) if args.nonce is not None else None
    images = _expected_images(args.expect_digest)
    reference = ReferenceValues(images) if images else None
    policy = Policy()
    psa = args.format == "psa" or (args.format == "auto" and _is_psa(data))
    appraise = appraise_psa if psa else appraise_eat
    challenge = nonce if nonce is not None else _own_nonce(data, psa)
    appraisal = appraise(data, keys, nonce=challenge, reference=reference, policy=policy)
    if nonce is None:
        # Without a challenge nothing shows the token is fresh: never affirm it (docs/cli.md).
        reasons = (_UNCHALLENGED, *appraisal.reasons)
        appraisal = replace(appraisal, status=Status.CONTRAINDICATED, reasons=reasons)
    return _report(appraisal, policy, nonce, args.json)


def add_attest(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("attest", help="appraise attestation evidence files")
    sub = parser.add_subparsers(dest="attest_command", metavar="ACTION", required=True)

    quote = sub.add_parser("quote", help="appraise a TPM quote (tpm2-tools files); exit 0 "
                           "affirming, 1 otherwise")  # fmt: skip
    quote.add_argument("--ak", required=True, metavar="AK.pem|AK.tpm2b_public",
                       help="the attestation key: PEM, TPM2B_PUBLIC or TPMT_PUBLIC")  # fmt: skip
    quote.add_argument("--attest", required=True, metavar="FILE",
                       help="TPMS_ATTEST (tpm2_quote -m)")  # fmt: skip
    quote.add_argument("--signature", required=True, metavar="FILE",
                       help="TPMT_SIGNATURE (tpm2_quote -s)")  # fmt: skip
    quote.add_argument("--nonce", required=True, metavar="HEX", help="the challenge (-q)")
    quote.add_argument("--pcrs", metavar="FILE",
                       help="PCR values: tpm2_quote -o output or JSON {bank: {pcr: hex}}",
                       )  # fmt: skip
    quote.add_argument("--expect", action="append", default=[], metavar="BANK:PCR=HEX",
                       help="golden PCR value, e.g. sha256:16=<hex>; repeatable")  # fmt: skip
    quote.add_argument("--event-log", metavar="FILE", help="compact or TCG event log")
    quote.add_argument("--allow-sha1", action="store_true", help="accept SHA-1 evidence")
    quote.add_argument("--json", action="store_true", help="print the EAR claims as JSON")
    quote.set_defaults(run=_quote)

    token = sub.add_parser("token", help="appraise a PSA token or EAT; exit 0 affirming, "
                           "1 otherwise")  # fmt: skip
    token.add_argument("file", metavar="FILE")
    token.add_argument("--key", action="append", required=True, metavar="KEY",
                       help="PEM public key, JWK file, or hmac:HEX; repeatable")  # fmt: skip
    token.add_argument("--nonce", metavar="HEX",
                       help="the challenge; without it the verdict is never affirming",
                       )  # fmt: skip
    token.add_argument("--format", choices=("psa", "eat", "auto"), default="auto")
    token.add_argument("--expect-digest", action="append", default=[], metavar="NAME=HEX",
                       help="expected component digest (PSA measurement type); repeatable",
                       )  # fmt: skip
    token.add_argument("--json", action="store_true", help="print the EAR claims as JSON")
    token.set_defaults(run=_token)
