"""One exception tree for the attestation ring (STYLE.md "Verbs and errors").

Parsers raise ``DecodeError``; ``verify_*`` raise ``VerificationError`` (signature, key, or
freshness). Appraisal never raises for a bad device: a failed check becomes a contraindicated
result. Each class carries the HTTP status and the RFC 9457 problem type the service renders.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["AttestError", "DecodeError", "FreshnessError", "UnsupportedError", "VerificationError"]

_PROBLEM_BASE = "https://suitsrv.dev/problems/"


class AttestError(Exception):
    """Base of every error raised by ``attest``."""

    status: ClassVar[int] = 400
    problem: ClassVar[str] = "attestation-error"

    @property
    def problem_type(self) -> str:
        return _PROBLEM_BASE + self.problem


class DecodeError(AttestError):
    """The evidence bytes are not a well-formed structure of the expected type."""

    status = 400
    problem = "malformed-evidence"


class UnsupportedError(DecodeError):
    """Well-formed, but an algorithm, structure type or format this verifier refuses."""

    status = 422
    problem = "unsupported-evidence"


class VerificationError(AttestError):
    """Cryptographic validation failed: signature, key binding, PCR digest, event log replay."""

    status = 422
    problem = "evidence-verification-failed"


class FreshnessError(VerificationError):
    """The evidence is not fresh: wrong, missing or replayed nonce, clock going backwards."""

    problem = "evidence-not-fresh"
