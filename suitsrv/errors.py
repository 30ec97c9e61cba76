"""The service's exception tree; the web middleware renders each as RFC 9457 problem+json.

Library errors (``manifests.ManifestError``, later ``attest`` errors) carry their own status
and problem type and are rendered the same way; nothing else builds error bodies.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "Conflict",
    "DamagedBlob",
    "Forbidden",
    "InsufficientStorage",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Quarantined",
    "RangeNotSatisfiable",
    "ServiceError",
    "Unauthorized",
    "UnsupportedMediaType",
]

PROBLEM_BASE = "https://suitsrv.dev/problems/"


class ServiceError(Exception):
    """Base of every error the service answers with a 4xx/5xx problem."""

    status: ClassVar[int] = 500
    problem: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self, detail: str, *, headers: dict[str, str] | None = None, **extensions: object
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions

    @property
    def problem_type(self) -> str:
        return PROBLEM_BASE + self.problem


class InvalidRequest(ServiceError):
    status, problem, title = 400, "invalid-request", "Invalid request"


class Unauthorized(ServiceError):
    status, problem, title = 401, "unauthorized", "Authentication required"


class Forbidden(ServiceError):
    status, problem, title = 403, "forbidden", "Not allowed"


class Quarantined(ServiceError):
    """A quarantined device called an endpoint outside its pinhole."""

    status, problem, title = 403, "quarantined", "Device is quarantined"


class NotFound(ServiceError):
    status, problem, title = 404, "not-found", "Not found"


class Conflict(ServiceError):
    status, problem, title = 409, "conflict", "Conflict"


class PreconditionFailed(ServiceError):
    status, problem, title = 412, "precondition-failed", "Precondition failed"


class PayloadTooLarge(ServiceError):
    status, problem, title = 413, "payload-too-large", "Payload too large"


class RangeNotSatisfiable(ServiceError):
    status, problem, title = 416, "range-not-satisfiable", "Range not satisfiable"


class UnsupportedMediaType(ServiceError):
    status, problem, title = 415, "unsupported-media-type", "Unsupported media type"


class InsufficientStorage(ServiceError):
    status, problem, title = 507, "insufficient-storage", "Insufficient storage"


class DamagedBlob(ServiceError):
    """A stored blob is missing or not the size its row says: the data directory was altered
    outside the service (the service itself only renames complete, fsynced files)."""

    status, problem, title = 500, "damaged-blob", "Stored object damaged"
