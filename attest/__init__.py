"""The RATS verifier ring: TPM quotes, event logs, EAT/PSA evidence, EAR results.

Pure and synchronous: bytes and values in, values out or a typed error (DESIGN.md).
"""

from .errors import AttestError, DecodeError, FreshnessError, UnsupportedError, VerificationError

__all__ = ["AttestError", "DecodeError", "FreshnessError", "UnsupportedError", "VerificationError"]
