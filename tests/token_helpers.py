"""Shared helpers for the token tests (test_tokens, test_attest_cose, test_evidence_claims,
test_ear, test_ear_claims): keys, the vector folder, a sample EAR, and a test-side PSA claims
encoder (the verifier itself has no builder)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import strategies as st

from attest.ear import Ear, Status, Submod, TrustVector, VerifierId
from attest.keys import Algorithm, SigningKey
from attest.psa import PsaClaims, SoftwareComponent

from .conftest import VECTORS_ENV, vectors_root


def expected(folder: str) -> dict[str, Any]:
    """expected.json of a vector folder under attest/; {} when SUITSRV_VECTORS is unset
    (parametrised tests then get no parameters and are skipped), an error when it is set
    and the file is missing."""
    root = vectors_root()
    if root is None:
        return {}
    data: dict[str, Any] = json.loads((root / "attest" / folder / "expected.json").read_text())
    return data


def attest_vectors() -> Path:
    """The attest vector folder; skips when SUITSRV_VECTORS is unset, fails when missing."""
    root = vectors_root()
    if root is None:
        pytest.skip(f"{VECTORS_ENV} is not set")
    path = root / "attest"
    assert path.is_dir(), f"{VECTORS_ENV} is set but {path} is missing"
    return path


def pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


P256 = ec.generate_private_key(ec.SECP256R1())
ES256 = SigningKey(Algorithm.ES256, private_key=P256, kid=b"k1")
VERIFIER = ES256.verifier("p256")


def psa_map(c: PsaClaims) -> dict[int, object]:
    """Test-side encoder of the RFC 9783 claims-set (the verifier has no builder)."""
    comps = [
        {
            k: v
            for k, v in {
                1: s.measurement_type,
                2: s.measurement_value,
                4: s.version,
                5: s.signer_id,
                6: s.measurement_desc,
            }.items()
            if v is not None
        }
        for s in c.software_components
    ]
    out: dict[int, object] = {
        265: c.profile,
        10: c.nonce,
        256: c.instance_id,
        2396: c.implementation_id,
        2394: c.client_id,
        2395: c.security_lifecycle,
        2399: comps,
    }
    for key, value in (
        (268, c.boot_seed),
        (2398, c.certification_reference),
        (2400, c.verification_service_indicator),
    ):
        if value is not None:
            out[key] = value
    return out


BASE = PsaClaims(
    "p",
    bytes(32),
    b"\x01" + bytes(32),
    bytes(32),
    1,
    0x3000,
    (SoftwareComponent(bytes(32), bytes(32)),),
)


NOW = 1_800_000_000
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def sample_ear(**changes: Any) -> Ear:
    """An affirming EAR for one device, issued at NOW, with a 32-byte nonce."""
    vector = TrustVector(instance_identity=2, executables=2, hardware=2)
    extra = {"suitsrv.device_id": "dev-1", "suitsrv.reasons": []}
    sub = Submod(Status.AFFIRMING, vector, ("policy:1",), extra=extra)
    base = Ear(
        iat=NOW,
        verifier_id=VerifierId("suitsrv", "0.1.0"),
        submods={"dev-1": sub},
        exp=NOW + 300,
        nonce=b"n" * 32,
    )
    return dataclasses.replace(base, **changes)
