"""AK enrollment by credential activation (TPM 2.0 Part 1 §24 "Credential Protection").

The verifier plays TPM2_MakeCredential (Part 3 §12.6) in software: it wraps a secret so
that only the TPM holding the EK's private key, with an object of exactly ``ak_name``
loaded, can recover it with TPM2_ActivateCredential (Part 3 §12.5). A device that returns
the secret has proved that the AK lives in the same TPM as the EK.

    seed            RSA EK: random, digest-sized, RSA-OAEP(nameAlg, label "IDENTITY\\0")
                    ECC EK: KDFe(nameAlg, Z, "IDENTITY", ephemeral.x, EK.x, digest bits)
                            with Z the x of ECDH(ephemeral, EK): one-pass ECDH, Part 1 §24
    symKey          KDFa(nameAlg, seed, "STORAGE", ak_name, "", EK symmetric key bits)
    encIdentity     AES-CFB(symKey, IV = 0) of TPM2B_DIGEST(secret)
    HMACkey         KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits)
    outerHMAC       HMAC_nameAlg(HMACkey, encIdentity || ak_name)
    credentialBlob  TPM2B_ID_OBJECT = u16 size | TPM2B_DIGEST(outerHMAC) | encIdentity
    encryptedSecret TPM2B_ENCRYPTED_SECRET = u16 size | RSA ciphertext or TPMS_ECC_POINT

Randomness comes in through ``rng`` (the service passes ``os.urandom``) so this module
stays pure; only the OAEP padding's own seed is drawn inside OpenSSL, which keeps the RSA
operation in vetted constant-time code and carries no secret of ours.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import DecodeError, UnsupportedError
from .tpm import ObjectAttr, PublicKey, TpmAlg, digest_size, hash_of

__all__ = ["kdfa", "kdfe", "make_credential"]

_OAEP_HASHES: Final[dict[TpmAlg, type[hashes.HashAlgorithm]]] = {
    TpmAlg.SHA1: hashes.SHA1,
    TpmAlg.SHA256: hashes.SHA256,
    TpmAlg.SHA384: hashes.SHA384,
    TpmAlg.SHA512: hashes.SHA512,
}
# Orders of the NIST curves an ECC EK may use (FIPS 186-5 / SP 800-186 §3.2.1).
_CURVE_ORDERS: Final = {
    "secp256r1": int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16),
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
        "C7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "secp521r1": int(
        "01FF" + "FFFFFFFF" * 7 + "FFFFFFFA"
        "51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}
_STORAGE: Final = ObjectAttr.RESTRICTED | ObjectAttr.DECRYPT


def _label(label: bytes) -> bytes:
    # Part 1 §11.4.10: labels are NUL-terminated strings; add the terminator when missing,
    # as the reference implementation does, so b"STORAGE" and b"STORAGE\0" agree.
    return label if not label or label.endswith(b"\0") else label + b"\0"


def _check_bits(bits: int) -> int:
    if bits <= 0 or bits % 8:
        raise RuntimeError(f"KDF output of {bits} bits is not a positive multiple of 8")
    return bits // 8


def kdfa(  # noqa: PLR0917 - the argument order of Part 1 §11.4.10.2
    hash_alg: TpmAlg, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int
) -> bytes:
    """KDFa (TPM 2.0 Part 1 §11.4.10.2): SP 800-108 counter-mode KDF with HMAC.

    ``K(i) = HMAC(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32)``."""
    name, size = hash_of(hash_alg), _check_bits(bits)
    fixed = _label(label) + context_u + context_v + struct.pack(">I", bits)
    out = b"".join(
        hmac.new(key, struct.pack(">I", i) + fixed, name).digest()
        for i in range(1, -(-size // digest_size(hash_alg)) + 1)
    )
    return out[:size]


def kdfe(  # noqa: PLR0917 - the argument order of Part 1 §11.4.10.3
    hash_alg: TpmAlg, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int
) -> bytes:
    """KDFe (TPM 2.0 Part 1 §11.4.10.3): SP 800-56A concatenation KDF over the ECDH ``z``.

    ``K(i) = H([i]32 || Z || label || 0x00 || partyUInfo || partyVInfo)``."""
    name, size = hash_of(hash_alg), _check_bits(bits)
    other = _label(label) + party_u + party_v
    out = b"".join(
        hashlib.new(name, struct.pack(">I", i) + z + other).digest()
        for i in range(1, -(-size // digest_size(hash_alg)) + 1)
    )
    return out[:size]


def _aes_cfb_zero_iv(key: bytes, data: bytes) -> bytes:
    """AES-CFB128 with a zero IV (the TPM's CFB, Part 1 §24), per SP 800-38A §6.3: each block
    is XORed with E(key, previous ciphertext block). Built on the block cipher because
    cryptography moved its CFB mode to ``decrepit`` (deprecated in one version, moved in
    the next) and the project supports both sides of that move."""
    block_cipher = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - CFB keystream
    out = b""
    feedback = bytes(16)
    for i in range(0, len(data), 16):
        stream = block_cipher.update(feedback)
        feedback = bytes(p ^ k for p, k in zip(data[i : i + 16], stream, strict=False))
        out += feedback
    return out


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _check_name(ak_name: bytes) -> None:
    """TPM2B_NAME content of an object: u16 nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1 §16)."""
    if len(ak_name) < 2:
        raise DecodeError("AK name is too short")
    (alg_id,) = struct.unpack_from(">H", ak_name)
    if alg_id not in _OAEP_HASHES or len(ak_name) != 2 + digest_size(TpmAlg(alg_id)):
        raise DecodeError(f"AK name is not a nameAlg-prefixed digest ({ak_name.hex()})")


def _check_ek(ek: PublicKey) -> None:
    attrs = ek.object_attributes
    if attrs & _STORAGE != _STORAGE or attrs & ObjectAttr.SIGN:
        raise UnsupportedError("the EK is not a restricted decryption (storage) key")
    if ek.symmetric is not TpmAlg.AES or ek.symmetric_mode is not TpmAlg.CFB:
        raise UnsupportedError("the EK's symmetric algorithm is not AES-CFB")


def _random(rng: Callable[[int], bytes], n: int) -> bytes:
    data = rng(n)
    if not isinstance(data, bytes) or len(data) != n:
        raise RuntimeError(f"rng({n}) did not return {n} bytes")
    return data


def _rsa_seed(
    ek: PublicKey, key: rsa.RSAPublicKey, rng: Callable[[int], bytes]
) -> tuple[bytes, bytes]:
    seed = _random(rng, digest_size(ek.name_alg))
    hash_cls = _OAEP_HASHES[ek.name_alg]
    oaep = padding.OAEP(mgf=padding.MGF1(hash_cls()), algorithm=hash_cls(), label=b"IDENTITY\0")
    return seed, key.encrypt(seed, oaep)


def _ecc_seed(
    ek: PublicKey, key: ec.EllipticCurvePublicKey, rng: Callable[[int], bytes]
) -> tuple[bytes, bytes]:
    order = _CURVE_ORDERS.get(key.curve.name)
    if order is None:
        raise UnsupportedError(f"EK curve {key.curve.name} is not supported")
    size = (key.curve.key_size + 7) // 8
    # FIPS 186-5 A.2.1: 64 extra random bits, then reduce into [1, n-1].
    extra = _random(rng, size + 8)
    ephemeral = ec.derive_private_key(int.from_bytes(extra, "big") % (order - 1) + 1, key.curve)
    z = ephemeral.exchange(ec.ECDH(), key)  # x of the shared point, curve-sized
    ephemeral_numbers = ephemeral.public_key().public_numbers()
    ex = ephemeral_numbers.x.to_bytes(size, "big")
    ey = ephemeral_numbers.y.to_bytes(size, "big")
    # The TPM pads the EK's x to the curve size in its public area, as here.
    ek_x = key.public_numbers().x.to_bytes(size, "big")
    seed = kdfe(ek.name_alg, z, b"IDENTITY", ex, ek_x, 8 * digest_size(ek.name_alg))
    return seed, _tpm2b(ex) + _tpm2b(ey)  # TPMS_ECC_POINT


def make_credential(
    ek: PublicKey, ak_name: bytes, secret: bytes, *, rng: Callable[[int], bytes]
) -> tuple[bytes, bytes]:
    """Wrap ``secret`` for TPM2_ActivateCredential under ``ek`` and the AK's Name.

    Returns ``(credential_blob, encrypted_secret)``: the marshalled TPM2B_ID_OBJECT and
    TPM2B_ENCRYPTED_SECRET, as the command takes them. ``rng(n)`` must return ``n``
    cryptographically random bytes. The secret may be 1 .. digest-size-of-nameAlg bytes
    (Part 3 §12.6: larger is TPM_RC_SIZE)."""
    _check_ek(ek)
    _check_name(ak_name)
    size = digest_size(ek.name_alg)
    if not 1 <= len(secret) <= size:
        raise RuntimeError(f"credential secret must be 1..{size} bytes, not {len(secret)}")
    if ek.type is TpmAlg.RSA and isinstance(ek.key, rsa.RSAPublicKey):
        seed, encrypted = _rsa_seed(ek, ek.key, rng)
    elif ek.type is TpmAlg.ECC and isinstance(ek.key, ec.EllipticCurvePublicKey):
        seed, encrypted = _ecc_seed(ek, ek.key, rng)
    else:
        raise UnsupportedError(f"EK type {ek.type!r} is not supported")
    sym_key = kdfa(ek.name_alg, seed, b"STORAGE", ak_name, b"", ek.symmetric_bits)
    enc_identity = _aes_cfb_zero_iv(sym_key, _tpm2b(secret))
    hmac_key = kdfa(ek.name_alg, seed, b"INTEGRITY", b"", b"", 8 * size)
    outer = hmac.new(hmac_key, enc_identity + ak_name, hash_of(ek.name_alg)).digest()
    return _tpm2b(_tpm2b(outer) + enc_identity), _tpm2b(encrypted)
