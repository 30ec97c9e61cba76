"""The RATS verifier ring: TPM quotes, event logs, EAT/PSA evidence, appraisal, EAR results.

Pure and synchronous: bytes and values in, values out or a typed error (DESIGN.md).
See docs/attestation.md.
"""

from .appraise import (
    Appraisal,
    ExpectedImage,
    Policy,
    ReferenceValues,
    UnknownComponents,
    appraise_eat,
    appraise_psa,
    appraise_tpm,
)
from .credential import make_credential
from .ear import public_jwk, sign_ear_cwt, sign_ear_jwt, verify_ear_cwt, verify_ear_jwt
from .ear_claims import Ear, Status, Submod, TrustVector, VerifierId, status_of
from .eat import parse_eat, verify_eat
from .errors import AttestError, DecodeError, FreshnessError, UnsupportedError, VerificationError
from .eventlog import Event, EventLog, encode_compact_log, parse_event_log, replay, verify_replay
from .keys import VerifierKey, hmac_key, key_from_jwk, key_from_pem
from .psa import parse_psa_token, verify_psa_token
from .quote import PcrValues, parse_pcr_file, pcr_values_from_mapping, rebooted_since, verify_quote
from .tpm import AkKey, Attest, ClockInfo, PublicKey, TpmAlg, parse_attest, parse_public

__all__ = [
    "AkKey",
    "Appraisal",
    "Attest",
    "AttestError",
    "ClockInfo",
    "DecodeError",
    "Ear",
    "Event",
    "EventLog",
    "ExpectedImage",
    "FreshnessError",
    "PcrValues",
    "Policy",
    "PublicKey",
    "ReferenceValues",
    "Status",
    "Submod",
    "TpmAlg",
    "TrustVector",
    "UnknownComponents",
    "UnsupportedError",
    "VerificationError",
    "VerifierId",
    "VerifierKey",
    "appraise_eat",
    "appraise_psa",
    "appraise_tpm",
    "encode_compact_log",
    "hmac_key",
    "key_from_jwk",
    "key_from_pem",
    "make_credential",
    "parse_attest",
    "parse_eat",
    "parse_event_log",
    "parse_pcr_file",
    "parse_psa_token",
    "parse_public",
    "pcr_values_from_mapping",
    "public_jwk",
    "rebooted_since",
    "replay",
    "sign_ear_cwt",
    "sign_ear_jwt",
    "status_of",
    "verify_ear_cwt",
    "verify_ear_jwt",
    "verify_eat",
    "verify_psa_token",
    "verify_quote",
    "verify_replay",
]
