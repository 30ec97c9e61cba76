"""Credential activation: our TPM2_MakeCredential in software, activated by a real swtpm.

The KDFs are checked against cryptography's independent SP 800-108 / SP 800-56A code; the
decisive test is a TPM returning the secret from TPM2_ActivateCredential."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from hypothesis import given
from hypothesis import strategies as st

from attest.credential import kdfa, kdfe, make_credential
from attest.errors import DecodeError, UnsupportedError
from attest.tpm import PublicKey, TpmAlg, parse_public

from .swtpm import running_swtpm

_CRYPTOGRAPHY_HASHES: dict[TpmAlg, Callable[[], hashes.HashAlgorithm]] = {
    TpmAlg.SHA1: hashes.SHA1,
    TpmAlg.SHA256: hashes.SHA256,
    TpmAlg.SHA384: hashes.SHA384,
    TpmAlg.SHA512: hashes.SHA512,
}
hash_algs = st.sampled_from(sorted(_CRYPTOGRAPHY_HASHES))
labels = st.sampled_from([b"STORAGE", b"INTEGRITY", b"IDENTITY", b"DUPLICATE", b"x"])


def rng(seed: int) -> Callable[[int], bytes]:
    """Deterministic bytes for tests; the service passes os.urandom."""
    return random.Random(seed).randbytes


# --- KDFs against an independent implementation ----------------------------------------


@given(hash_algs, st.binary(max_size=70), labels, st.binary(max_size=40),
       st.binary(max_size=40), st.integers(1, 130).map(lambda n: 8 * n))  # fmt: skip
def test_kdfa_is_sp800_108_counter_mode_hmac(
    alg: TpmAlg, key: bytes, label: bytes, u: bytes, v: bytes, bits: int
) -> None:
    oracle = KBKDFHMAC(
        algorithm=_CRYPTOGRAPHY_HASHES[alg](), mode=Mode.CounterMode, length=bits // 8,
        rlen=4, llen=4, location=CounterLocation.BeforeFixed, label=label, context=u + v,
        fixed=None,
    )  # fmt: skip
    expected = oracle.derive(key) if key else None
    if expected is not None:  # cryptography refuses an empty key; the KDF itself does not
        assert kdfa(alg, key, label, u, v, bits) == expected
    assert kdfa(alg, key, label + b"\0", u, v, bits) == kdfa(alg, key, label, u, v, bits)


@given(hash_algs, st.binary(min_size=1, max_size=66), labels, st.binary(max_size=66),
       st.binary(max_size=66), st.integers(1, 130).map(lambda n: 8 * n))  # fmt: skip
def test_kdfe_is_sp800_56a_concatenation(
    alg: TpmAlg, z: bytes, label: bytes, u: bytes, v: bytes, bits: int
) -> None:
    oracle = ConcatKDFHash(_CRYPTOGRAPHY_HASHES[alg](), bits // 8, label + b"\0" + u + v)
    assert kdfe(alg, z, label, u, v, bits) == oracle.derive(z)


def test_kdf_misuse() -> None:
    with pytest.raises(RuntimeError):
        kdfa(TpmAlg.SHA256, b"k", b"STORAGE", b"", b"", 12)
    with pytest.raises(UnsupportedError):
        kdfe(TpmAlg.SM3_256, b"z", b"IDENTITY", b"", b"", 256)


# --- a real TPM ---------------------------------------------------------------------


@dataclass
class Tpm:
    esapi: Any
    ak: Any  # ESYS_TR of an ECC P-256 restricted signing key in the endorsement hierarchy
    ak_name: bytes


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tpm]:
    from tpm2_pytss import ESAPI, ESYS_TR, TPM2B_PUBLIC, TPMA_OBJECT, TPMT_PUBLIC

    attrs = (
        TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
    )  # fmt: skip
    template = TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", attrs))
    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as sw, ESAPI(sw.tcti) as esapi:
        # The AK sits in the endorsement hierarchy (notes/tpm-stack.md: clock info in clear).
        ak, ak_public, _, _, _ = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        try:
            ak_name = bytes(esapi.tr_get_name(ak))
            assert parse_public(ak_public.marshal()).name == ak_name
            yield Tpm(esapi, ak, ak_name)
        finally:
            esapi.flush_context(ak)


@dataclass
class Ek:
    handle: Any
    public: PublicKey


@pytest.fixture(scope="module", params=["EK-RSA2048", "EK-ECC256"])
def ek(request: pytest.FixtureRequest, tpm: Tpm) -> Iterator[Ek]:
    """The TCG EK Credential Profile low-range template (L-1 / L-2), as a device has it."""
    from tpm2_pytss import ESYS_TR
    from tpm2_pytss.utils import NoSuchIndex, create_ek_template

    def no_nv(index: int) -> bytes:
        raise NoSuchIndex(index)

    _, template = create_ek_template(request.param, no_nv)
    handle, public, _, _, _ = tpm.esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
    try:
        yield Ek(handle, parse_public(public.marshal()))
    finally:
        tpm.esapi.flush_context(handle)


def activate(tpm: Tpm, ek: Ek, blob: bytes, encrypted_secret: bytes) -> bytes:
    """TPM2_ActivateCredential; the EK's USER role needs PolicySecret(TPM_RH_ENDORSEMENT)
    (EK Credential Profile policy A), as tpm2_activatecredential does."""
    from tpm2_pytss import (
        ESYS_TR,
        TPM2_ALG,
        TPM2_SE,
        TPM2B_ENCRYPTED_SECRET,
        TPM2B_ID_OBJECT,
        TPMT_SYM_DEF,
    )

    session = tpm.esapi.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
        TPM2_ALG.SHA256,
    )  # fmt: skip
    try:
        tpm.esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
        id_object = TPM2B_ID_OBJECT.unmarshal(blob)[0]
        seed = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)[0]
        cert_info = tpm.esapi.activate_credential(
            tpm.ak, ek.handle, id_object, seed, session1=ESYS_TR.PASSWORD, session2=session
        )
        return bytes(cert_info)
    finally:
        tpm.esapi.flush_context(session)


@pytest.mark.parametrize("size", [1, 16, 32])
def test_the_tpm_activates_our_credential(tpm: Tpm, ek: Ek, size: int) -> None:
    secret = rng(size)(size)
    blob, encrypted = make_credential(ek.public, tpm.ak_name, secret, rng=rng(1))
    assert activate(tpm, ek, blob, encrypted) == secret


def test_same_shape_as_the_tpms_own_make_credential(tpm: Tpm, ek: Ek) -> None:
    from tpm2_pytss import TPM2B_DIGEST, TPM2B_NAME

    secret = b"s" * 32
    theirs = tpm.esapi.make_credential(
        ek.handle, TPM2B_DIGEST(secret), TPM2B_NAME.unmarshal(
            len(tpm.ak_name).to_bytes(2, "big") + tpm.ak_name)[0]
    )  # fmt: skip
    ours = make_credential(ek.public, tpm.ak_name, secret, rng=rng(2))
    assert [len(t.marshal()) for t in theirs] == [len(o) for o in ours]
    assert activate(tpm, ek, theirs[0].marshal(), theirs[1].marshal()) == secret


def test_wrong_ak_name_fails_the_integrity_check(tpm: Tpm, ek: Ek) -> None:
    from tpm2_pytss import TPM2_RC
    from tpm2_pytss.TSS2_Exception import TSS2_Exception

    other = tpm.ak_name[:-1] + bytes((tpm.ak_name[-1] ^ 1,))
    blob, encrypted = make_credential(ek.public, other, b"secret", rng=rng(3))
    with pytest.raises(TSS2_Exception, match="integrity") as info:
        activate(tpm, ek, blob, encrypted)
    assert info.value.error == TPM2_RC.INTEGRITY


@pytest.mark.parametrize("part", ["hmac", "identity", "secret"])
def test_a_flipped_byte_fails_activation(tpm: Tpm, ek: Ek, part: str) -> None:
    from tpm2_pytss.TSS2_Exception import TSS2_Exception

    blob, encrypted = make_credential(ek.public, tpm.ak_name, b"secret", rng=rng(4))
    if part == "secret":
        encrypted = encrypted[:-1] + bytes((encrypted[-1] ^ 1,))
    else:
        at = 4 if part == "hmac" else len(blob) - 1
        blob = blob[:at] + bytes((blob[at] ^ 1,)) + blob[at + 1 :]
    with pytest.raises(TSS2_Exception):
        activate(tpm, ek, blob, encrypted)


def test_deterministic_given_the_rng(tpm: Tpm, ek: Ek) -> None:
    first = make_credential(ek.public, tpm.ak_name, b"secret", rng=rng(5))
    again = make_credential(ek.public, tpm.ak_name, b"secret", rng=rng(5))
    # RSA-OAEP pads with OpenSSL's own randomness; the blob (from the seed) is fixed.
    assert first[0] == again[0]
    if ek.public.type is TpmAlg.ECC:
        assert first == again


def test_refuses_what_activation_could_not_use(tpm: Tpm, ek: Ek) -> None:
    with pytest.raises(RuntimeError, match=r"1\.\.32 bytes"):
        make_credential(ek.public, tpm.ak_name, bytes(33), rng=rng(6))
    with pytest.raises(RuntimeError, match=r"1\.\.32 bytes"):
        make_credential(ek.public, tpm.ak_name, b"", rng=rng(6))
    for bad_name in (b"", b"\x00\x0b", b"\x00\x0b" + bytes(20), b"\x00\x12" + bytes(32)):
        with pytest.raises(DecodeError, match="AK name"):
            make_credential(ek.public, bad_name, b"secret", rng=rng(6))
    ak_public = tpm.esapi.read_public(tpm.ak)[0]
    with pytest.raises(UnsupportedError, match="restricted decryption"):
        make_credential(parse_public(ak_public.marshal()), tpm.ak_name, b"s", rng=rng(6))
