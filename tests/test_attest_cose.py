"""The COSE rules of the attestation ring (attest._cose, attest.keys): algorithm bound to the
key record and to the protected header, header-bucket rules, every accepted algorithm, JWKs,
and pycose (an independent implementation, test-only) both ways."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pycose.algorithms import HMAC256, Es256
from pycose.headers import Algorithm as AlgHeader
from pycose.keys.cosekey import CoseKey
from pycose.keys.symmetric import SymmetricKey
from pycose.messages.cosemessage import CoseMessage as PyCoseMessage
from pycose.messages.mac0message import Mac0Message
from pycose.messages.sign1message import Sign1Message

from attest import _cbor, _cose
from attest.errors import DecodeError, UnsupportedError, VerificationError
from attest.keys import (
    Algorithm,
    SigningKey,
    VerifierKey,
    hmac_key,
    key_from_jwk,
    key_from_pem,
)

from .token_helpers import ES256, P256, VERIFIER, pem


def _raw_sign1(
    protected: dict[int, object], unprotected: dict[int, object], payload: object
) -> bytes:
    """A COSE_Sign1 over ``payload`` by P256 (ECDSA SHA-256) with whatever headers, so the
    parser's and verifier's header rules can be probed."""
    prot = _cbor.dumps(protected) if protected else b""
    tbs = _cbor.dumps(["Signature1", prot, b"", payload if isinstance(payload, bytes) else b""])
    r, s = decode_dss_signature(P256.sign(tbs, ec.ECDSA(hashes.SHA256())))
    return _cbor.dumps(_cbor.Tag(18, [prot, unprotected, payload, r.to_bytes(32) + s.to_bytes(32)]))


def test_our_sign1_verifies() -> None:
    msg = _cose.parse_cose(_cose.sign1(b"payload", ES256))
    assert (msg.algorithm, msg.kid, msg.payload) == (Algorithm.ES256, b"k1", b"payload")
    assert _cose.verify_cose(msg, [VERIFIER]) is VERIFIER
    assert _cose.sign1(b"payload", ES256) == _cose.sign1(b"payload", ES256)  # RFC 6979


@pytest.mark.parametrize(
    ("protected", "unprotected", "payload", "error", "message"),
    [
        ({1: -7}, {1: -7}, b"p", DecodeError, "unprotected"),
        ({}, {1: -7}, b"p", DecodeError, "unprotected"),
        ({}, {}, b"p", DecodeError, "missing from the protected"),
        ({1: -7, 4: b"a"}, {4: b"b"}, b"p", DecodeError, "both buckets"),
        ({1: -7, 2: [99]}, {}, b"p", UnsupportedError, "crit"),
        ({1: 0}, {}, b"p", UnsupportedError, "unsupported algorithm"),  # reserved / "none"
        ({1: -65535}, {}, b"p", UnsupportedError, "unsupported algorithm"),
        ({1: "ES256"}, {}, b"p", UnsupportedError, "unsupported algorithm"),
        ({1: 5}, {}, b"p", UnsupportedError, "cannot be used in a COSE_Sign1"),
        ({1: -7}, {}, None, UnsupportedError, "detached payload"),
        ({1: -7, 4: 7}, {}, b"p", DecodeError, "kid"),
    ],
)
def test_header_rules(
    protected: dict[int, object],
    unprotected: dict[int, object],
    payload: object,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        _cose.parse_cose(_raw_sign1(protected, unprotected, payload))


def test_protected_alg_must_be_in_the_key_record() -> None:
    # Signed with P-256/SHA-256 but labelled ES384: the ES256 record must not verify it, and
    # a record cannot list ES384 for a P-256 key (python-cwt would verify it, DESIGN.md).
    msg = _cose.parse_cose(_raw_sign1({1: -35}, {}, b"p"))
    with pytest.raises(VerificationError, match="no trusted key for ES384"):
        _cose.verify_cose(msg, [VERIFIER])
    with pytest.raises(UnsupportedError, match="do not fit"):
        VerifierKey("bad", frozenset({Algorithm.ES384}), public_key=P256.public_key())
    # the same bytes labelled ES256 verify: the check above is the label, not the signature
    assert _cose.verify_cose(_cose.parse_cose(_raw_sign1({1: -7}, {}, b"p")), [VERIFIER])


def test_verify_over_the_received_protected_bytes() -> None:
    # A non-preferred encoding of {1: -7} (0xa1 0x01 0x38 0x06 would be -7 as a 1-byte head)
    # is tolerated by the parser and must be verified as received, not re-encoded.
    prot = bytes.fromhex("a10126")
    odd = bytes.fromhex("a1190001" + "26")  # key 1 in a 2-byte head
    for header in (prot, odd):
        tbs = _cbor.dumps(["Signature1", header, b"", b"p"])
        r, s = decode_dss_signature(P256.sign(tbs, ec.ECDSA(hashes.SHA256())))
        data = _cbor.dumps(_cbor.Tag(18, [header, {}, b"p", r.to_bytes(32) + s.to_bytes(32)]))
        msg = _cose.parse_cose(data)
        assert msg.protected == header
        _cose.verify_cose(msg, [VERIFIER])


def test_wrong_structure() -> None:
    good = _cbor.loads(_cose.sign1(b"p", ES256), what="t")
    assert isinstance(good, _cbor.Tag) and isinstance(good.value, list)
    cases: list[object] = [
        good.value,  # untagged
        _cbor.Tag(98, good.value),  # COSE_Sign
        _cbor.Tag(18, good.value[:3]),
        _cbor.Tag(18, [good.value[0], {}, "text", good.value[3]]),
        _cbor.Tag(18, [{1: -7}, {}, b"p", good.value[3]]),
    ]
    for item in cases:
        with pytest.raises(DecodeError):
            _cose.parse_cose(_cbor.dumps(item))
    bad_sig = _cbor.Tag(18, [*good.value[:3], good.value[3][:-1]])
    with pytest.raises(VerificationError, match="does not verify"):
        _cose.verify_cose(_cose.parse_cose(_cbor.dumps(bad_sig)), [VERIFIER])


def _keys_for(alg: Algorithm) -> tuple[SigningKey, VerifierKey]:
    private: Any
    if alg in (Algorithm.ES256, Algorithm.ESP256):
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg in (Algorithm.ES384, Algorithm.ESP384):
        private = ec.generate_private_key(ec.SECP384R1())
    elif alg in (Algorithm.ES512, Algorithm.ESP512):
        private = ec.generate_private_key(ec.SECP521R1())
    elif alg in (Algorithm.EDDSA, Algorithm.ED25519):
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        signing = SigningKey(alg, secret=os.urandom(64))
        return signing, signing.verifier("mac")
    signing = SigningKey(alg, private_key=private)
    return signing, key_from_pem(pem(private), name="pem", algorithms=[alg])


@pytest.mark.parametrize("alg", list(Algorithm), ids=lambda a: a.name)
def test_every_algorithm_round_trips(alg: Algorithm) -> None:
    signing, verifier = _keys_for(alg)
    mac = alg in (Algorithm.HMAC_256_256, Algorithm.HMAC_384_384, Algorithm.HMAC_512_512)
    data = (_cose.mac0 if mac else _cose.sign1)(b"claims", signing)
    msg = _cose.parse_cose(data)
    assert msg.kind is (_cose.CoseKind.MAC0 if mac else _cose.CoseKind.SIGN1)
    assert _cose.verify_cose(msg, [verifier]) is verifier
    other_signing, other = _keys_for(alg)
    del other_signing
    with pytest.raises(VerificationError):
        _cose.verify_cose(msg, [other])


def test_key_records() -> None:
    with pytest.raises(UnsupportedError, match="too short"):
        hmac_key(bytes(32), [Algorithm.HMAC_384_384])
    with pytest.raises(UnsupportedError, match="exactly one"):
        VerifierKey("x", frozenset({Algorithm.ES256}))
    with pytest.raises(UnsupportedError, match="unsupported algorithm"):
        hmac_key(bytes(32), [0])
    assert key_from_pem(pem(P256), name="p").algorithms == {Algorithm.ES256, Algorithm.ESP256}
    assert _cose.signing_key_from_pem(pem(P256)).algorithm is Algorithm.ES256
    x = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert key_from_jwk(x).algorithms == {Algorithm.EDDSA, Algorithm.ED25519}
    oct_key = key_from_jwk({"kty": "oct", "k": "A" * 43, "alg": "HS256", "kid": "m"})
    assert (oct_key.name, oct_key.kid) == ("m", b"m")
    assert oct_key.algorithms == {Algorithm.HMAC_256_256}
    with pytest.raises(UnsupportedError):
        key_from_jwk({"kty": "RSA", "n": "AQAB", "e": "AQAB"})
    with pytest.raises(UnsupportedError):
        key_from_jwk({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "alg": "none"})
    with pytest.raises(DecodeError):  # not on the curve
        key_from_jwk({"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43})
    with pytest.raises(DecodeError):  # short coordinates
        key_from_jwk({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})


# ---------------------------------------------------------------- pycose interop


def test_pycose_verifies_our_sign1() -> None:
    msg: Any = PyCoseMessage.decode(_cose.sign1(b"from us", ES256))
    msg.key = CoseKey.from_pem_public_key(
        P256.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert msg.verify_signature()


def test_pycose_sign1_and_mac0_verify_here() -> None:
    msg = Sign1Message(phdr={AlgHeader: Es256}, payload=b"from pycose")
    msg.key = CoseKey.from_pem_private_key(pem(P256).decode())
    ours = _cose.parse_cose(msg.encode())
    assert _cose.verify_cose(ours, [VERIFIER]).name == "p256"
    secret = bytes(range(32))
    mac = Mac0Message(phdr={AlgHeader: HMAC256}, payload=b"mac", key=SymmetricKey(k=secret))
    assert _cose.verify_cose(_cose.parse_cose(mac.encode()), [hmac_key(secret, [5])])
