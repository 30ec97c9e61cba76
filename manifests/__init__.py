"""The SUIT manifest library: parse, verify, build and sign envelopes; parse reports.

Pure and synchronous (DESIGN.md): bytes and values in, values out or a typed error.
"""

from .errors import DecodeError, ManifestError, UnsupportedError, VerificationError

__all__ = ["DecodeError", "ManifestError", "UnsupportedError", "VerificationError"]
