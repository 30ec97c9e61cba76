"""manifests.cose against pycose (an independent COSE implementation), the public SUIT
vectors, the negative cases the rules forbid, and fuzzing."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.algorithms import HMAC256, EdDSA, Es256
from pycose.headers import KID
from pycose.headers import Algorithm as AlgHeader
from pycose.keys.cosekey import CoseKey
from pycose.keys.symmetric import SymmetricKey
from pycose.messages.cosemessage import CoseMessage as PyCoseMessage
from pycose.messages.mac0message import Mac0Message
from pycose.messages.sign1message import Sign1Message

from manifests._cbor import Tag, dumps
from manifests.cose import (
    Algorithm,
    CoseKind,
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
from manifests.errors import DecodeError, UnsupportedError, VerificationError
from tests.conftest import examples, suit_index

# Fixed test keys, so that every run signs the same bytes.
P256 = ec.derive_private_key(0x1234_5678_9ABC_DEF0 << 128 | 0xC0FFEE, ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SECRET = b"k" * 32
_EC = {Algorithm.ES256, Algorithm.ESP256}
PAYLOAD = b"\x58\x20" + bytes(range(32)) + b" a payload of a realistic length"


def es256(kid: bytes | None = None) -> SigningKey:
    return SigningKey(Algorithm.ES256, private_key=P256, kid=kid)


def pycose_key(key: SigningKey, *, private: bool) -> Any:
    if key.secret is not None:
        return SymmetricKey(k=key.secret)
    pem = (private_pem if private else public_pem)(key).decode()
    return (CoseKey.from_pem_private_key if private else CoseKey.from_pem_public_key)(pem)


# Interop with pycose -------------------------------------------------------------------


@pytest.mark.parametrize("detached", [False, True])
@pytest.mark.parametrize("kid", [None, b"device-1"])
def test_our_sign1_verifies_with_pycose(detached: bool, kid: bytes | None) -> None:
    data = sign1(PAYLOAD, es256(kid), detached=detached, external_aad=b"aad")
    msg: Any = PyCoseMessage.decode(data)
    msg.key, msg.external_aad = pycose_key(es256(), private=False), b"aad"
    assert msg.phdr.get(KID) == kid
    assert msg.verify_signature(detached_payload=PAYLOAD if detached else None)
    assert type(msg) is Sign1Message
    assert data == sign1(PAYLOAD, es256(kid), detached=detached, external_aad=b"aad")  # RFC 6979


@pytest.mark.parametrize(
    ("key", "alg"),
    [(es256(), Es256), (SigningKey(Algorithm.EDDSA, private_key=ED), EdDSA)],
    ids=["ES256", "EdDSA"],
)
def test_pycose_sign1_verifies_here(key: SigningKey, alg: Any) -> None:
    msg = Sign1Message(phdr={AlgHeader: alg, KID: b"k1"}, payload=PAYLOAD)
    msg.key = pycose_key(key, private=True)
    parsed = parse_cose(msg.encode())
    assert (parsed.kind, parsed.algorithm, parsed.kid) == (CoseKind.SIGN1, key.algorithm, b"k1")
    anchor = key.public_anchor("vendor")
    assert verify_cose(parsed, [anchor]) is anchor


def test_mac0_both_ways_with_pycose() -> None:
    key = hmac_signing_key(SECRET, kid=b"m")
    theirs: Any = PyCoseMessage.decode(mac0(PAYLOAD, key, detached=False))
    theirs.key = SymmetricKey(k=SECRET)
    assert theirs.verify_tag()
    msg = Mac0Message(phdr={AlgHeader: HMAC256}, payload=PAYLOAD, key=SymmetricKey(k=SECRET))
    parsed = parse_cose(msg.encode())
    assert parsed.kind is CoseKind.MAC0
    assert verify_cose(parsed, [hmac_anchor(SECRET, name="h")]).name == "h"


# Our own round trips (pycose 1.1.0 lacks ESP256 and Ed25519) ----------------------------


@pytest.mark.parametrize("alg", list(Algorithm), ids=lambda a: a.name)
@pytest.mark.parametrize("detached", [False, True])
def test_round_trip_every_algorithm(alg: Algorithm, detached: bool) -> None:
    key = generate_signing_key(alg)
    seal = mac0 if alg is Algorithm.HMAC_256_256 else sign1
    msg = parse_cose(seal(PAYLOAD, key, detached=detached, external_aad=b"x"))
    assert msg.algorithm == alg and msg.payload == (None if detached else PAYLOAD)
    anchors = [generate_signing_key(alg).public_anchor("other"), key.public_anchor("mine")]
    detached_payload = PAYLOAD if detached else None
    got = verify_cose(msg, anchors, detached_payload=detached_payload, external_aad=b"x")
    assert got.name == "mine"
    with pytest.raises(VerificationError):
        verify_cose(msg, anchors, detached_payload=detached_payload)  # external_aad differs


# Negative cases ------------------------------------------------------------------------


def forge(
    protected: dict[int, object] | bytes,
    unprotected: Mapping[Any, object],
    *,
    tag: int = 18,
    payload: object = PAYLOAD,
    sig: bytes = bytes(64),
) -> bytes:
    phdr = protected if isinstance(protected, bytes) else dumps(protected)
    return dumps(Tag(tag, [phdr, unprotected, payload, sig]))


def tamper(data: bytes, **changes: bytes) -> bytes:
    """``data`` with elements replaced and the original signature or tag kept."""
    item = cbor2.loads(data)
    names = ["protected", "unprotected", "payload", "tag"]
    body = [changes.get(name, value) for name, value in zip(names, item.value, strict=True)]
    return bytes(cbor2.dumps(cbor2.CBORTag(item.tag, body)))


def test_algorithm_comes_from_the_key_record() -> None:
    esp = SigningKey(Algorithm.ESP256, private_key=P256)
    msg = parse_cose(sign1(PAYLOAD, esp, detached=False))
    es256_only = TrustAnchor("r", frozenset({Algorithm.ES256}), P256.public_key())
    with pytest.raises(VerificationError, match="no trusted key for algorithm -9"):
        verify_cose(msg, [es256_only])
    assert verify_cose(msg, [esp.public_anchor("r")]).name == "r"
    # Same key, both algorithms listed: rewriting ES256 as ESP256 breaks the signature.
    both = anchor_from_pem(public_pem(es256()), name="both")
    tampered = tamper(sign1(PAYLOAD, es256(), detached=False), protected=dumps({1: -9}))
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_cose(parse_cose(tampered), [both])
    # A header naming ES384 (-35) never reaches a key, whatever the key could do.
    with pytest.raises(VerificationError, match="no trusted key for algorithm -35"):
        verify_cose(parse_cose(forge({1: -35}, {})), [both])
    # A MAC algorithm in a COSE_Sign1 is refused even with a matching HMAC anchor.
    with pytest.raises(VerificationError, match="cannot be used in a COSE_Sign1"):
        verify_cose(parse_cose(forge({1: 5}, {})), [hmac_anchor(SECRET, name="h")])


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (forge(b"", {1: -7}), DecodeError, "must not be in the unprotected header"),
        (forge({1: -7}, {1: -7}), DecodeError, "must not be in the unprotected header"),
        (forge({1: -7, 4: b"a"}, {4: b"a"}), DecodeError, "both buckets"),
        (forge({1: -7, 2: [4]}, {}), UnsupportedError, "crit"),
        (forge({1: -7}, {2: [4]}), UnsupportedError, "crit"),
        (forge({4: b"a"}, {}), DecodeError, "missing from the protected header"),
        (forge({1: "ES256"}, {}), UnsupportedError, "must be an integer"),
        (forge({1: -7, 4: "kid"}, {}), DecodeError, "kid must be a byte string"),
        (forge({1: -7}, {"x": 1}), UnsupportedError, "labels must be integers"),
        (forge(bytes.fromhex("a201260126"), {}), DecodeError, "duplicate map key"),
        (forge(bytes.fromhex("a0"), {}), DecodeError, "missing from the protected header"),
        (forge({1: -7}, {}, payload="text"), DecodeError, "payload"),
        (forge({1: -7}, {}, tag=98), UnsupportedError, "COSE_Sign"),
        (forge({1: -7}, {}, tag=97), UnsupportedError, "COSE_Mac"),
        (forge({1: -7}, {}, tag=16), DecodeError, "tag 16"),
        (dumps([dumps({1: -7}), {}, PAYLOAD, bytes(64)]), DecodeError, "expected a tagged"),
        (dumps(Tag(18, [dumps({1: -7}), {}, PAYLOAD])), DecodeError, "four elements"),
        (dumps(Tag(18, [{1: -7}, {}, PAYLOAD, b""])), DecodeError, "protected header must be"),
        (forge({1: -7}, {})[:-1], DecodeError, "longer than the remaining"),
        (forge({1: -7}, {}) + b"\x00", DecodeError, "trailing"),
    ],
)
def test_parse_rejects(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_cose(data)


def test_attached_payload_where_detached_is_required() -> None:
    anchors = [es256().public_anchor("a")]
    msg = parse_cose(sign1(PAYLOAD, es256(), detached=False))
    with pytest.raises(VerificationError, match="attached payload where a detached"):
        verify_cose(msg, anchors, detached_payload=PAYLOAD)
    detached = parse_cose(sign1(PAYLOAD, es256(), detached=True))
    with pytest.raises(VerificationError, match="none was supplied"):
        verify_cose(detached, anchors)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_cose(detached, anchors, detached_payload=PAYLOAD + b"!")


@pytest.mark.parametrize("alg", list(Algorithm), ids=lambda a: a.name)
def test_bit_flips_and_truncation_are_refused(alg: Algorithm) -> None:
    key = generate_signing_key(alg)
    key = SigningKey(alg, key.private_key, key.secret, kid=b"k1")  # the protected header ends in it
    anchor = replace(key.public_anchor("a"), kid=None)  # a candidate whatever the kid says
    data = (mac0 if alg is Algorithm.HMAC_256_256 else sign1)(PAYLOAD, key, detached=False)
    msg = parse_cose(data)
    assert verify_cose(msg, [anchor]) is anchor
    changes = [{"tag": msg.tag[:n]} for n in (0, 31, len(msg.tag) - 1)] + [{"tag": msg.tag + b"\0"}]
    for part in ("protected", "payload", "tag"):
        for bit in (0x01, 0x80):
            flipped = bytearray(getattr(msg, part))
            flipped[-1] ^= bit
            changes.append({part: bytes(flipped)})
    for change in changes:
        with pytest.raises(VerificationError, match="does not verify"):
            verify_cose(parse_cose(tamper(data, **change)), [anchor])


def test_kid_selects_the_key() -> None:
    data = sign1(PAYLOAD, es256(b"device-1"), detached=False)
    other = SigningKey(Algorithm.ES256, private_key=ec.generate_private_key(ec.SECP256R1()))
    right, wrong = es256(b"device-1").public_anchor("right"), es256(b"device-2").public_anchor("w")
    assert verify_cose(parse_cose(data), [other.public_anchor("o"), wrong, right]) is right
    with pytest.raises(VerificationError, match="no trusted key for algorithm -7 \\(kid 6465"):
        verify_cose(parse_cose(data), [wrong])
    # An anchor without a kid is a candidate for any kid; the signature still decides.
    with pytest.raises(VerificationError, match="does not verify"):
        verify_cose(parse_cose(data), [other.public_anchor("o")])


def test_signing_refuses_the_wrong_structure() -> None:
    with pytest.raises(RuntimeError):
        sign1(PAYLOAD, hmac_signing_key(SECRET), detached=False)
    with pytest.raises(RuntimeError):
        mac0(PAYLOAD, es256(), detached=False)
    with pytest.raises(RuntimeError):
        private_pem(hmac_signing_key(SECRET))


# Key records ---------------------------------------------------------------------------


def test_key_records_bind_algorithms_to_key_types() -> None:
    with pytest.raises(UnsupportedError, match="EDDSA"):
        TrustAnchor("a", frozenset({Algorithm.EDDSA}), P256.public_key())
    with pytest.raises(UnsupportedError, match="ES256"):
        TrustAnchor("a", frozenset({Algorithm.ES256}), ED.public_key())
    with pytest.raises(UnsupportedError, match="P-256 or Ed25519"):
        TrustAnchor(
            "a", frozenset({Algorithm.ES256}), ec.generate_private_key(ec.SECP384R1()).public_key()
        )
    with pytest.raises(UnsupportedError, match="at least 32 bytes"):
        hmac_anchor(b"short", name="h")
    with pytest.raises(UnsupportedError, match="exactly one"):
        TrustAnchor("a", frozenset({Algorithm.ES256}), P256.public_key(), SECRET)
    with pytest.raises(UnsupportedError, match="at least one algorithm"):
        TrustAnchor("a", frozenset(), P256.public_key())
    with pytest.raises(UnsupportedError, match="unsupported algorithm -35"):
        TrustAnchor("a", frozenset({-35}), P256.public_key())  # type: ignore[arg-type]
    with pytest.raises(UnsupportedError, match="unsupported key type"):
        TrustAnchor("a", frozenset({Algorithm.ES256}), P256)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedError, match="HMAC_256_256"):
        SigningKey(Algorithm.HMAC_256_256, private_key=P256)
    assert "kkkk" not in repr(hmac_signing_key(SECRET)) + repr(hmac_anchor(SECRET, name="h"))


def test_pem_round_trip_and_defaults() -> None:
    ed = SigningKey(Algorithm.EDDSA, private_key=ED)
    for key, algs in [(es256(), _EC), (ed, {Algorithm.EDDSA, Algorithm.ED25519})]:
        loaded = signing_key_from_pem(private_pem(key), kid=b"k")
        assert (loaded.algorithm, loaded.kid) == (key.algorithm, b"k")
        assert public_pem(loaded) == public_pem(key)
        for pem in (public_pem(key), private_pem(key)):  # a private PEM yields its public half
            anchor = anchor_from_pem(pem, name="n")
            assert anchor.algorithms == algs
            signed = parse_cose(sign1(PAYLOAD, loaded, detached=False))
            assert verify_cose(signed, [anchor]) is anchor
    narrowed = anchor_from_pem(public_pem(es256()), name="n", algorithms=[Algorithm.ESP256])
    assert narrowed.algorithms == {Algorithm.ESP256}


def test_pem_refusals() -> None:
    pkcs8, none = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    rsa_pem = rsa.generate_private_key(65537, 1024).private_bytes(
        serialization.Encoding.PEM, pkcs8, none
    )
    with pytest.raises(UnsupportedError):
        anchor_from_pem(rsa_pem, name="r")
    with pytest.raises(UnsupportedError):
        signing_key_from_pem(rsa_pem)
    with pytest.raises(DecodeError):
        anchor_from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", name="x")
    pw = serialization.BestAvailableEncryption(b"pw")
    with pytest.raises(DecodeError):  # encrypted
        signing_key_from_pem(P256.private_bytes(serialization.Encoding.PEM, pkcs8, pw))


def test_anchor_from_cose_key() -> None:
    numbers = P256.public_key().public_numbers()
    ec2 = {1: 2, 2: b"kid-1", 3: -9, -1: 1, -2: numbers.x.to_bytes(32), -3: numbers.y.to_bytes(32)}
    anchor = anchor_from_cose_key(dumps(ec2), name="c")
    assert anchor.algorithms == {Algorithm.ESP256}
    assert anchor.kid == b"kid-1"
    esp = SigningKey(Algorithm.ESP256, private_key=P256, kid=b"kid-1")
    assert verify_cose(
        parse_cose(sign1(PAYLOAD, esp, detached=True)), [anchor], detached_payload=PAYLOAD
    )
    # Bound to -9 only: an ES256 block from the same key finds no anchor.
    with pytest.raises(VerificationError, match="no trusted key"):
        verify_cose(parse_cose(sign1(PAYLOAD, es256(), detached=False)), [anchor])
    okp = {1: 1, 3: -19, -1: 6, -2: ED.public_key().public_bytes_raw()}
    assert anchor_from_cose_key(dumps(okp), name="o").algorithms == {Algorithm.ED25519}
    sym = anchor_from_cose_key(dumps({1: 4, 3: 5, -1: SECRET}), name="s")
    assert sym.secret == SECRET and sym.algorithms == {Algorithm.HMAC_256_256}
    with pytest.raises(UnsupportedError, match="alg"):
        anchor_from_cose_key(dumps({k: v for k, v in ec2.items() if k != 3}), name="x")
    with pytest.raises(DecodeError, match="alg"):
        anchor_from_cose_key(dumps({**ec2, 3: -8}), name="x")  # EdDSA on an EC2 key
    with pytest.raises(DecodeError, match="needs k"):
        anchor_from_cose_key(dumps({1: 4, 3: 5}), name="x")  # python-cwt would invent a key
    with pytest.raises(DecodeError):
        anchor_from_cose_key(dumps({**ec2, -2: b"\x00" * 32}), name="x")  # not on the curve
    with pytest.raises(DecodeError):
        anchor_from_cose_key(b"\x80", name="x")


# Public vectors: every COSE block in the SUIT vector index -----------------------------


def _auth_blocks() -> list[Any]:
    params = []
    for vector in suit_index()["vectors"]:
        for n, fact in enumerate(vector["facts"].get("auth_blocks") or []):
            params.append(pytest.param(vector["file"], n, fact, id=f"{vector['file']}#{n}"))
    return params


def _vector_anchors(root: Path) -> list[TrustAnchor]:
    anchors = []
    for name, info in suit_index()["keys"].items():
        data = (root / info["file"]).read_bytes()
        if info["kind"] == "ec-p256":
            anchors.append(anchor_from_pem(data, name=name))
        elif name.startswith("hmac"):
            anchors.append(hmac_anchor(bytes.fromhex(data.decode().strip()), name=name))
    return anchors


@pytest.mark.parametrize(("file", "index", "fact"), _auth_blocks())
def test_vector_auth_blocks(
    suit_vectors: Path, file: str, index: int, fact: dict[str, Any]
) -> None:
    envelope = cbor2.loads((suit_vectors / file).read_bytes())
    if isinstance(envelope, cbor2.CBORTag):
        envelope = envelope.value
    auth = cbor2.loads(envelope[2])
    msg = parse_cose(auth[1 + index])  # detached payload: the bstr-wrapped SUIT_Digest
    assert (msg.algorithm, msg.kind, msg.payload) == (fact["alg"], fact["type"], None)
    anchors = _vector_anchors(suit_vectors)
    if fact["result"] == "invalid":
        with pytest.raises(VerificationError):
            verify_cose(msg, anchors, detached_payload=auth[0])
    else:
        assert "valid:" + verify_cose(msg, anchors, detached_payload=auth[0]).name == fact["result"]
        with pytest.raises(VerificationError):
            verify_cose(msg, anchors, detached_payload=auth[0][:-1] + b"\x00")


# Fuzzing -------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        parse_cose(data)


_SAMPLES = [
    (sign1(PAYLOAD, es256(b"k"), detached=False), None),
    (sign1(PAYLOAD, SigningKey(Algorithm.ED25519, private_key=ED), detached=True), PAYLOAD),
    (mac0(PAYLOAD, hmac_signing_key(SECRET, kid=b"m"), detached=False), None),
]
_ANCHORS = [
    es256().public_anchor("p"),
    SigningKey(Algorithm.ED25519, private_key=ED).public_anchor("e"),
    hmac_anchor(SECRET, name="h"),
]


@settings(max_examples=examples(300), deadline=None)
@given(
    st.sampled_from(_SAMPLES),
    st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete"]), st.integers(0, 10**6), st.integers(0, 255)
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_messages_raise_only_decode_or_verification_errors(
    sample: tuple[bytes, bytes | None], edits: list[tuple[str, int, int]]
) -> None:
    original, detached = sample
    data = bytearray(original)
    for op, where, byte in edits:
        pos = where % (len(data) + (op == "insert"))
        if op == "set":
            data[pos] = byte
        elif op == "insert":
            data.insert(pos, byte)
        elif len(data) > 1:
            del data[pos]
    try:
        verify_cose(parse_cose(bytes(data)), _ANCHORS, detached_payload=detached)
    except (DecodeError, VerificationError):
        return
    assert bytes(data) == original  # only an unchanged message may verify


@given(
    st.sampled_from([17, 18]),
    st.dictionaries(st.integers(-5, 5), st.integers() | st.binary(max_size=8), max_size=3),
    st.dictionaries(st.integers(-5, 5), st.integers() | st.binary(max_size=8), max_size=3),
    st.none() | st.binary(max_size=16),
    st.binary(max_size=70),
)
def test_structured_junk_raises_only_decode_or_verification_errors(
    number: int, phdr: dict[int, object], uhdr: dict[int, object], payload: bytes | None, sig: bytes
) -> None:
    data = forge(phdr, uhdr, tag=number, payload=payload, sig=sig)
    try:
        verify_cose(parse_cose(data), _ANCHORS, detached_payload=None if payload else b"p")
    except (DecodeError, VerificationError):
        return
    raise AssertionError("junk verified")


def test_non_canonical_protected_header_is_read_as_received() -> None:
    # RFC 9052 §3 asks no canonical order; the signature covers the received bytes (ADR 0003).
    key = es256()
    protected = bytes.fromhex("a204400126")  # {4: h'', 1: -7}: kid before alg
    tbs = dumps(["Signature1", protected, b"", PAYLOAD])
    assert key.private_key is not None and isinstance(key.private_key, ec.EllipticCurvePrivateKey)
    der = key.private_key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    msg = parse_cose(dumps(Tag(18, [protected, {}, PAYLOAD, sig])))
    assert msg.protected == protected
    assert verify_cose(msg, [key.public_anchor("a")]).name == "a"
