"""Vendor and class identifiers (manifest-37 §8.4.8.2 "Constructing UUIDs").

Vendor ID = UUID5(DNS_PREFIX, vendor domain name)
Class ID  = UUID5(Vendor ID, Class-Specific-Information)
Class ID  = UUID5(UUID5(NAMESPACE_CBOR_PEN, CBOR_PEN), Class-Specific-Information)  ; PEN vendors
NAMESPACE_CBOR_PEN = UUID5(NAMESPACE_OID, h'D86F452B06010401')
"""

from __future__ import annotations

import hashlib
import uuid

from . import _cbor
from .model import Pen, VendorId

__all__ = [
    "NAMESPACE_CBOR_PEN",
    "class_id",
    "pen",
    "uuid5_bytes",
    "vendor_id_from_domain",
]


def uuid5_bytes(namespace: uuid.UUID, name: bytes | str) -> uuid.UUID:
    """RFC 4122 §4.3 name-based UUID (SHA-1) over raw bytes or UTF-8 text."""
    data = name.encode() if isinstance(name, str) else name
    digest = hashlib.sha1(namespace.bytes + data, usedforsecurity=False).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


#: 47fbdabb-f2e4-55f0-bb39-3620c2f6df4e: tag 111 (absolute OID) over 1.3.6.1.4.1.
NAMESPACE_CBOR_PEN = uuid5_bytes(uuid.NAMESPACE_OID, bytes.fromhex("D86F452B06010401"))


def vendor_id_from_domain(domain: str) -> uuid.UUID:
    """The recommended vendor-id: UUID5 in the DNS namespace of the vendor's domain name."""
    return uuid5_bytes(uuid.NAMESPACE_DNS, domain)


def pen(number: int) -> Pen:
    """A Private Enterprise Number as the relative OID (X.690 §8.20) of ``#6.112``."""
    if number < 0:
        raise ValueError("a PEN is a non-negative integer")
    groups = [number & 0x7F]
    number >>= 7
    while number:
        groups.append(0x80 | (number & 0x7F))
        number >>= 7
    return Pen(bytes(reversed(groups)))


def class_id(vendor: VendorId, class_info: bytes | str) -> uuid.UUID:
    """The recommended class-id for ``vendor`` from class-specific information."""
    if isinstance(vendor, Pen):
        vendor = uuid5_bytes(NAMESPACE_CBOR_PEN, _cbor.dumps(_cbor.Tag(112, vendor.relative_oid)))
    return uuid5_bytes(vendor, class_info)
