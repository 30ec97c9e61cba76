"""Accounts: operators, vendors and their trust anchors, devices, and their credentials.

Shared by the operator HTTP API and ``suitsrv admin`` so both apply the same validation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from manifests import Algorithm, ManifestError, vendor_id_from_domain
from manifests.uuids import class_id as make_class_id

from .auth import hash_token, issue_token, new_token
from .errors import Conflict, InvalidRequest, NotFound
from .lifecycle import State
from .releases import to_trust_anchor
from .store import AnchorRecord, DeviceRecord, Role, Store, TokenRecord, VendorRecord

__all__ = [
    "ALGORITHM_NAMES",
    "add_anchor",
    "add_devices",
    "add_vendor",
    "anchor_from_input",
    "device_record",
    "init_operator",
    "issue_credential",
    "register_device",
]

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ALGORITHM_NAMES: Final = {
    "ES256": Algorithm.ES256,
    "ESP256": Algorithm.ESP256,
    "EdDSA": Algorithm.EDDSA,
    "Ed25519": Algorithm.ED25519,
    "HMAC256": Algorithm.HMAC_256_256,
}
#: Keys a device may be registered with: report signing key, TPM EK/AK (ak_public is a base64
#: TPM2B_PUBLIC), the IAK of COSE evidence (PEM or JWK), a MUD URL.
_KEY_NAMES: Final = {
    "report_key", "ek_pem", "ek_public", "ek_certificate", "ak_pem", "ak_public", "iak_pem",
    "iak_jwk", "mud_url",
}  # fmt: skip


def claim_code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidRequest(f"{what} must be 1-128 characters of letters, digits and . _ : -")
    return value


def _uuid(value: object, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidRequest(f"{what} {value!r} is not a UUID") from None


def anchor_from_input(vendor: str, spec: Mapping[str, Any], now: float) -> AnchorRecord:
    """An anchor record from ``{"pem": ..., "algorithms": [...]}``, ``{"cose_key": base64}`` or
    ``{"hmac": hex}``; the key is loaded once here so a bad key is refused at registration."""
    kid = spec.get("kid")
    kid_bytes = kid.encode() if isinstance(kid, str) else None
    names = spec.get("algorithms")
    if names is not None and (
        not isinstance(names, list)
        or not all(isinstance(n, str) and n in ALGORITHM_NAMES for n in names)
    ):
        raise InvalidRequest(f"algorithms must be a list of {sorted(ALGORITHM_NAMES)}")
    algs = tuple(int(ALGORITHM_NAMES[n]) for n in names or [])
    anchor_id = secrets.token_hex(6)
    try:
        if "pem" in spec:
            pem = str(spec["pem"]).encode()
            record = AnchorRecord(anchor_id, vendor, "pem", algs, pem, kid_bytes, now)
            if not algs:  # the key type's default algorithms, recorded explicitly
                loaded = to_trust_anchor(record)
                record = AnchorRecord(
                    anchor_id,
                    vendor,
                    "pem",
                    tuple(sorted(int(a) for a in loaded.algorithms)),
                    pem,
                    kid_bytes,
                    now,
                )
        elif "cose_key" in spec:
            data = base64.b64decode(str(spec["cose_key"]), validate=True)
            record = AnchorRecord(anchor_id, vendor, "cose_key", (), data, None, now)
            loaded = to_trust_anchor(record)
            record = AnchorRecord(
                anchor_id,
                vendor,
                "cose_key",
                tuple(int(a) for a in loaded.algorithms),
                data,
                loaded.kid,
                now,
            )
        elif "hmac" in spec:
            secret = bytes.fromhex(str(spec["hmac"]))
            record = AnchorRecord(
                anchor_id, vendor, "hmac", (int(Algorithm.HMAC_256_256),), secret, kid_bytes, now
            )
        else:
            raise InvalidRequest("an anchor needs one of pem, cose_key (base64) or hmac (hex)")
        to_trust_anchor(record)
    except (ManifestError, ValueError, binascii.Error) as exc:
        raise InvalidRequest(f"unusable trust anchor: {exc}") from exc
    return record


async def add_vendor(
    store: Store,
    name: str,
    *,
    vendor_ids: Sequence[str] = (),
    vendor_domains: Sequence[str] = (),
    anchors: Sequence[Mapping[str, Any]] = (),
    now: float,
) -> tuple[VendorRecord, list[AnchorRecord]]:
    check_name(name, "vendor name")
    ids = [_uuid(v, "vendor-id") for v in vendor_ids]
    ids += [str(vendor_id_from_domain(d)) for d in vendor_domains]
    if not ids:
        raise InvalidRequest("a vendor needs at least one vendor-id or vendor-domain")
    records = [anchor_from_input(name, a, now) for a in anchors]
    vendor = VendorRecord(name, tuple(sorted(set(ids))), now)
    await store.add_vendor(vendor, records)
    return vendor, records


async def add_anchor(
    store: Store, vendor: str, spec: Mapping[str, Any], now: float
) -> AnchorRecord:
    if await store.get_vendor(vendor) is None:
        raise NotFound(f"no vendor {vendor!r}")
    record = anchor_from_input(vendor, spec, now)
    await store.add_anchor(record)
    return record


async def issue_credential(
    store: Store, role: Role, scope: str, *, label: str = "", now: float
) -> tuple[str, TokenRecord]:
    """A token whose scope must name something that exists (a vendor or a device)."""
    if role is Role.OPERATOR:
        scope = "*"
    elif role is Role.VENDOR and await store.get_vendor(scope) is None:
        raise NotFound(f"no vendor {scope!r}")
    elif role is Role.DEVICE and await store.get_device(scope) is None:
        raise NotFound(f"no device {scope!r}")
    elif role is Role.DEVICE and (await store.get_lifecycle(scope)).state is State.DECOMMISSIONED:
        raise Conflict(f"device {scope!r} is decommissioned: it gets no credentials")
    elif role is Role.GATEWAY:
        check_name(scope, "gateway id")
    return await issue_token(store, role, scope, label=label, now=now)


async def init_operator(store: Store, now: float) -> str | None:
    """The first operator token, or None when an active operator token already exists."""
    if await store.count_active_tokens(Role.OPERATOR) > 0:
        return None
    token, _ = await issue_token(store, Role.OPERATOR, "*", label="initial operator", now=now)
    return token


async def register_device(
    store: Store,
    device_id: str,
    vendor: str,
    *,
    class_id: str | None = None,
    class_name: str | None = None,
    gateway: str | None = None,
    keys: Mapping[str, str] | None = None,
    claim_code: str | None = None,
    now: float,
) -> tuple[DeviceRecord, str]:
    """Register a device and issue its token (shown once). ``claim_code`` is the secret printed
    on the device (its label, its box): a gateway must present it to claim the device; only its
    SHA-256 is kept."""
    record = await store.get_vendor(vendor)
    if record is None:
        raise NotFound(f"no vendor {vendor!r}")
    device = device_record(record, device_id, class_id=class_id, class_name=class_name,
                           gateway=gateway, keys=keys, claim_code=claim_code, now=now)  # fmt: skip
    return (await add_devices(store, [device], now))[0]


def device_record(
    vendor: VendorRecord,
    device_id: object,
    *,
    class_id: object = None,
    class_name: object = None,
    gateway: object = None,
    keys: object = None,
    claim_code: object = None,
    now: float,
) -> DeviceRecord:
    """A device's record from untrusted fields, every one checked; nothing is written."""
    if not isinstance(device_id, str):
        raise InvalidRequest("device_id must be text")
    check_name(device_id, "device id")
    if (class_id is None) == (class_name is None):
        raise InvalidRequest("give exactly one of class_id or class_name")
    if class_name is not None:
        if not isinstance(class_name, str):
            raise InvalidRequest("class_name must be text")
        class_id = str(make_class_id(uuid.UUID(vendor.vendor_ids[0]), class_name))
    if not isinstance(class_id, str):
        raise InvalidRequest("class_id must be text (a UUID)")
    if keys is not None and not isinstance(keys, Mapping):
        raise InvalidRequest("keys must be an object")
    keys = dict(keys or {})
    unknown = set(keys) - _KEY_NAMES
    if unknown or not all(isinstance(v, str) for v in keys.values()):
        raise InvalidRequest(f"device keys may be {sorted(_KEY_NAMES)} (text)")
    if gateway is not None:
        if not isinstance(gateway, str):
            raise InvalidRequest("gateway must be text")
        check_name(gateway, "gateway id")
    if claim_code is not None:
        if not isinstance(claim_code, str) or len(claim_code) < 8:
            raise InvalidRequest("claim_code must be text of at least 8 characters")
        keys["claim_code_sha256"] = claim_code_hash(claim_code)
    return DeviceRecord(device_id, vendor.name, _uuid(class_id, "class-id"), gateway, keys, now)


async def add_devices(
    store: Store, devices: Sequence[DeviceRecord], now: float
) -> list[tuple[DeviceRecord, str]]:
    """Store checked records (device_record) with a new token each, all or none: a device id
    already registered (409) stores nothing. The tokens exist nowhere else afterwards."""
    issued = [(device, *new_token()) for device in devices]
    await store.add_devices([
        (device, TokenRecord(token_id, hash_token(token), Role.DEVICE, device.device_id,
                             "device", now))
        for device, token, token_id in issued
    ])  # fmt: skip
    return [(device, token) for device, token, _ in issued]
