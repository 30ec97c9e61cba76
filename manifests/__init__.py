"""The SUIT manifest library: parse, verify, build and sign envelopes; parse reports.

Pure and synchronous (DESIGN.md): bytes and values in, values out or a typed error.
draft-ietf-suit-manifest-37 with trust-domains-12, update-management-12,
firmware-encryption-26 and report-20. See docs/manifests.md.
"""

from .build import build_manifest, sign
from .cose import (
    Algorithm,
    CoseKind,
    CoseMessage,
    SigningKey,
    TrustAnchor,
    anchor_from_cose_key,
    anchor_from_pem,
    generate_signing_key,
    hmac_anchor,
    hmac_signing_key,
    mac0,
    parse_cose,
    private_pem,
    public_pem,
    sign1,
    signing_key_from_pem,
    verify_cose,
)
from .digest import Digest
from .errors import DecodeError, ManifestError, UnsupportedError, VerificationError
from .model import ComponentId, Envelope, Manifest, Parameters, Pen
from .parse import parse_envelope, parse_manifest
from .report import (
    Record,
    Report,
    ReportResult,
    SystemPropertyClaims,
    build_report,
    parse_report,
    sign_report,
    verify_report,
)
from .sever import reattach, sever
from .spec import ComponentSpec, ManifestSpec, SpecError, load_spec
from .summary import ComponentSummary, summarize
from .uuids import class_id, vendor_id_from_domain
from .verify import VerifiedManifest, verify_envelope

__all__ = [
    "Algorithm",
    "ComponentId",
    "ComponentSpec",
    "ComponentSummary",
    "CoseKind",
    "CoseMessage",
    "DecodeError",
    "Digest",
    "Envelope",
    "Manifest",
    "ManifestError",
    "ManifestSpec",
    "Parameters",
    "Pen",
    "Record",
    "Report",
    "ReportResult",
    "SigningKey",
    "SpecError",
    "SystemPropertyClaims",
    "TrustAnchor",
    "UnsupportedError",
    "VerificationError",
    "VerifiedManifest",
    "anchor_from_cose_key",
    "anchor_from_pem",
    "build_manifest",
    "build_report",
    "class_id",
    "generate_signing_key",
    "hmac_anchor",
    "hmac_signing_key",
    "load_spec",
    "mac0",
    "parse_cose",
    "parse_envelope",
    "parse_manifest",
    "parse_report",
    "private_pem",
    "public_pem",
    "reattach",
    "sever",
    "sign",
    "sign1",
    "sign_report",
    "signing_key_from_pem",
    "summarize",
    "vendor_id_from_domain",
    "verify_cose",
    "verify_envelope",
    "verify_report",
]
