"""AK enrollment by credential activation (TPM 2.0 Part 1 §24): a device proves that the AK it
presents lives in the same TPM as the EK its manufacturer registered.

1. The device sends its EK and AK public areas. The EK must be the registered one; the AK must
   be a restricted, sign-only, fixedTPM key (attest.tpm.require_ak).
2. The service wraps a random secret with ``make_credential`` under the EK and the AK's Name
   and keeps it (in memory, single use, short TTL: like a nonce).
3. Only that TPM can run TPM2_ActivateCredential with both keys loaded and recover the secret;
   the device sends it back and the AK is recorded as the device's attestation key.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from attest import AttestError
from attest.credential import make_credential
from attest.tpm import parse_public, require_ak

from .errors import InvalidRequest, ServiceError
from .store import DeviceRecord

__all__ = ["EnrollmentFailed", "Enrollments", "Pending"]


class EnrollmentFailed(ServiceError):
    status, problem, title = 422, "enrollment-failed", "AK enrollment failed"


@dataclass(frozen=True)
class Pending:
    device_id: str
    ak_public: bytes
    secret: bytes
    expires_at: float


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{what} is not base64") from None


class Enrollments:
    """Outstanding credential challenges, by enrollment id."""

    def __init__(
        self, ttl: float = 300.0, randbytes: Callable[[int], bytes] = secrets.token_bytes
    ) -> None:
        self.ttl = ttl
        self._randbytes = randbytes
        self._open: dict[str, Pending] = {}

    def start(
        self, device: DeviceRecord, ek_b64: object, ak_b64: object, now: float
    ) -> dict[str, str]:
        """Check the keys and return the credential challenge for TPM2_ActivateCredential."""
        ek_bytes, ak_bytes = _b64(ek_b64, "ek_public"), _b64(ak_b64, "ak_public")
        registered = device.keys.get("ek_public")
        if registered is None:
            raise EnrollmentFailed("no EK is registered for this device")
        if not hmac.compare_digest(_b64(registered, "registered EK"), ek_bytes):
            raise EnrollmentFailed("this EK is not the one registered for the device")
        try:
            ek, ak = parse_public(ek_bytes), parse_public(ak_bytes)
            require_ak(ak)
            secret = self._randbytes(16)
            blob, encrypted = make_credential(ek, ak.name, secret, rng=self._randbytes)
        except AttestError as exc:
            raise EnrollmentFailed(f"unusable EK or AK: {exc}") from exc
        # One open enrollment per device (a new start replaces it): the book stays bounded by
        # the number of registered devices, whatever a caller repeats.
        done = [
            k
            for k, p in self._open.items()
            if p.expires_at <= now or p.device_id == device.device_id
        ]
        for key in done:
            del self._open[key]
        enrollment_id = self._randbytes(12).hex()
        self._open[enrollment_id] = Pending(device.device_id, ak_bytes, secret, now + self.ttl)
        return {
            "enrollment_id": enrollment_id,
            "credential_blob": base64.b64encode(blob).decode(),
            "encrypted_secret": base64.b64encode(encrypted).decode(),
        }

    def finish(
        self, device: DeviceRecord, enrollment_id: object, secret: object, now: float
    ) -> bytes:
        """The AK public area once the device returned the right secret (single use)."""
        pending = self._open.get(str(enrollment_id))
        if pending is None or pending.device_id != device.device_id:
            raise EnrollmentFailed("unknown, used or expired enrollment: start again")
        del self._open[str(enrollment_id)]  # single use, whatever follows
        if pending.expires_at <= now:
            raise EnrollmentFailed("unknown, used or expired enrollment: start again")
        if not hmac.compare_digest(pending.secret, _b64(secret, "secret")):
            raise EnrollmentFailed("the secret does not match: the AK is not in this TPM")
        return pending.ak_public
