"""One exception tree for the manifest ring (STYLE.md "Verbs and errors").

Each class carries the HTTP status and the RFC 9457 problem ``type`` the service renders,
so the web layer never decides how a manifest failure looks on the wire.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "DecodeError",
    "ManifestError",
    "UnsupportedError",
    "VerificationError",
]

_PROBLEM_BASE = "https://suitsrv.dev/problems/"


class ManifestError(Exception):
    """Base of every error raised by ``manifests``."""

    status: ClassVar[int] = 400
    problem: ClassVar[str] = "manifest-error"

    @property
    def problem_type(self) -> str:
        return _PROBLEM_BASE + self.problem


class DecodeError(ManifestError):
    """The bytes are not a well-formed, strictly encoded object of the expected shape."""

    status = 400
    problem = "malformed"


class UnsupportedError(DecodeError):
    """Well-formed, but uses a version, key, command or algorithm this library refuses."""

    status = 422
    problem = "unsupported"


class VerificationError(ManifestError):
    """Authentication failed: digest, signature, MAC, or an untrusted signer."""

    status = 422
    problem = "verification-failed"
