"""Evidence containers the service accepts besides JSON: TPM quote evidence as one CBOR map,
and bare COSE tokens whose nonce names the challenge they answer.

CDDL of the CBOR form (text keys, the JSON form's names, binary values as bstr)::

    tpm-evidence = {
      "nonce": bstr, "quote": bstr (TPMS_ATTEST), "signature": bstr (TPMT_SIGNATURE),
      "pcrs": { + bank-name => { + uint => bstr } },   ; bank-name: "sha1" / "sha256" / ...
      ? "event_log": bstr, ? "device_id": tstr,
    }
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _cbor
from .eat import parse_eat
from .errors import DecodeError
from .psa import parse_psa_token
from .quote import PcrValues, pcr_values_from_mapping

__all__ = ["TpmEvidence", "parse_tpm_evidence", "token_nonce"]

_KEYS = {"nonce", "quote", "signature", "pcrs", "event_log", "device_id"}


@dataclass(frozen=True)
class TpmEvidence:
    nonce: bytes
    quote: bytes
    signature: bytes
    pcrs: PcrValues
    event_log: bytes | None = None
    device_id: str | None = None


def _bstr(obj: dict[object, object], key: str, required: bool = True) -> bytes | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, bytes):
        raise DecodeError(f"TPM evidence: '{key}' must be a byte string")
    return value


def parse_tpm_evidence(data: bytes) -> TpmEvidence:
    """The CBOR form of TPM quote evidence (module docstring)."""
    obj = _cbor.loads(data, what="TPM evidence", max_size=4 << 20)
    if not isinstance(obj, dict):
        raise DecodeError("TPM evidence must be a CBOR map")
    unknown = set(obj) - _KEYS
    if unknown:
        raise DecodeError(f"TPM evidence: unknown keys {sorted(map(str, unknown))}")
    pcrs = obj.get("pcrs")
    if not isinstance(pcrs, dict):
        raise DecodeError("TPM evidence: 'pcrs' must map bank names to {index: value}")
    as_text: dict[str, dict[str, str]] = {}
    for bank, values in pcrs.items():
        if not isinstance(bank, str) or not isinstance(values, dict):
            raise DecodeError("TPM evidence: 'pcrs' must map bank names to {index: value}")
        if not all(type(i) is int and isinstance(v, bytes) for i, v in values.items()):
            raise DecodeError(f"TPM evidence: bank {bank} must map PCR numbers to byte strings")
        as_text[bank] = {str(i): v.hex() for i, v in values.items()}
    device_id = obj.get("device_id")
    if device_id is not None and not isinstance(device_id, str):
        raise DecodeError("TPM evidence: 'device_id' must be text")
    nonce, quote, signature = (_bstr(obj, k) for k in ("nonce", "quote", "signature"))
    assert nonce is not None and quote is not None and signature is not None
    return TpmEvidence(
        nonce, quote, signature, pcr_values_from_mapping(as_text),
        _bstr(obj, "event_log", required=False), device_id,
    )  # fmt: skip


def token_nonce(data: bytes, kind: str) -> bytes:
    """The nonce a PSA token or EAT carries, read before verification only to find the
    challenge it claims to answer; verification then requires it to be that challenge's."""
    if kind == "psa-token":
        return parse_psa_token(data).claims.nonce
    claims = parse_eat(data).claims
    if not claims.nonce:
        raise DecodeError("EAT: no eat_nonce, so it answers no challenge")
    return claims.nonce[0]
