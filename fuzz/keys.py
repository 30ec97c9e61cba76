"""Deterministic keys for the fuzz targets' verify paths, and the public vectors' keys.

The keys are derived from fixed scalars so a kept corpus signed in one run still verifies in
the next, and a finding reproduces from its bytes alone. Test keys only: nothing here protects
anything. Vector keys are read at run time from ``$SUITSRV_VECTORS`` (never copied here).
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

import attest.keys as akeys
from attest.errors import AttestError
from attest.tpm_public import AkKey, public_from_pem
from manifests.cose import (
    Algorithm,
    SigningKey,
    TrustAnchor,
    anchor_from_pem,
    hmac_anchor,
    hmac_signing_key,
)
from manifests.errors import ManifestError

__all__ = [
    "ATTEST_HMAC",
    "ATTEST_SIGNER",
    "MANIFEST_HMAC",
    "MANIFEST_SIGNER",
    "ak_keys",
    "attest_keys",
    "manifest_anchors",
    "vectors_root",
]

VECTORS_ENV = "SUITSRV_VECTORS"
DEFAULT_VECTORS = Path("/work/shared/vectors")

_P256 = ec.derive_private_key(0x5EED_F022_5EED_F022_5EED_F022, ec.SECP256R1())
_SECRET = bytes(range(32))

MANIFEST_SIGNER = SigningKey(Algorithm.ES256, private_key=_P256, kid=b"fuzz")
MANIFEST_HMAC = hmac_signing_key(_SECRET, kid=b"fuzz-mac")
ATTEST_SIGNER = akeys.SigningKey(akeys.Algorithm.ES256, private_key=_P256, kid=b"fuzz")
ATTEST_HMAC = akeys.SigningKey(akeys.Algorithm.HMAC_256_256, secret=_SECRET, kid=b"fuzz-mac")


def vectors_root() -> Path | None:
    """``$SUITSRV_VECTORS``, else /work/shared/vectors when present; None without vectors."""
    value = os.environ.get(VECTORS_ENV)
    root = Path(value) if value else DEFAULT_VECTORS
    return root if root.is_dir() else None


@cache
def manifest_anchors() -> tuple[TrustAnchor, ...]:
    """Our two keys, plus every key the SUIT vector index lists (so signed vectors verify
    and the fuzzer reaches the severable-member and dependency checks behind a signature)."""
    anchors = [MANIFEST_SIGNER.public_anchor("fuzz"), hmac_anchor(_SECRET, name="fuzz-mac")]
    root = vectors_root()
    index = root / "suit" / "index.json" if root else None
    if root is None or index is None or not index.is_file():
        return tuple(anchors)
    for name, key in json.loads(index.read_text(encoding="utf-8"))["keys"].items():
        data = (root / "suit" / key["file"]).read_bytes()
        try:
            if key["kind"] == "ec-p256":
                anchors.append(anchor_from_pem(data, name=name))
            elif key["kind"].startswith("HMAC"):
                anchors.append(hmac_anchor(bytes.fromhex(data.decode().strip()), name=name))
        except ManifestError:
            continue  # a key kind our verifier refuses is not a fuzzing concern
    return tuple(anchors)


@cache
def attest_keys() -> tuple[akeys.VerifierKey, ...]:
    """Our keys plus the PSA/EAT vectors' public keys (PEM and JWK files)."""
    keys = [ATTEST_SIGNER.verifier("fuzz"), ATTEST_HMAC.verifier("fuzz-mac")]
    root = vectors_root()
    if root is None:
        return tuple(keys)
    for path in sorted((root / "attest").glob("*/*/*.p*m")):
        if path.name.endswith(".public.pem"):
            try:
                keys.append(akeys.key_from_pem(path.read_bytes(), name=path.name))
            except AttestError:
                continue
    for path in sorted((root / "attest").glob("*/*/*.jwk")):
        try:
            keys.append(akeys.key_from_jwk(json.loads(path.read_text()), name=path.name))
        except (AttestError, ValueError):
            continue
    return tuple(keys)


@cache
def ak_keys() -> tuple[AkKey, ...]:
    """Attestation keys for the TPMT_SIGNATURE verify path: our P-256 key, and the TPM
    vectors' AKs (RSA and ECC) when present."""
    from cryptography.hazmat.primitives import serialization

    pem = _P256.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    aks = [public_from_pem(pem)]
    root = vectors_root()
    if root is not None:
        for path in sorted((root / "attest" / "tpm").glob("*/ak.pem")):
            try:
                aks.append(public_from_pem(path.read_bytes()))
            except AttestError:
                continue
    return tuple(aks)
