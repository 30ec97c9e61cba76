"""Whole envelopes against pycose, an independent COSE implementation (test-only oracle):
our signed envelopes verify there, and envelopes whose blocks pycose signed verify here."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from pycose.algorithms import HMAC256, Es256
from pycose.headers import Algorithm as AlgHeader
from pycose.keys.cosekey import CoseKey
from pycose.keys.symmetric import SymmetricKey
from pycose.messages.cosemessage import CoseMessage as PyCoseMessage
from pycose.messages.mac0message import Mac0Message
from pycose.messages.sign1message import Sign1Message

from manifests.build import build_manifest, encode_envelope, sign
from manifests.cose import Algorithm, generate_signing_key, hmac_anchor, private_pem, public_pem
from manifests.digest import Digest
from manifests.errors import VerificationError
from manifests.parse import parse_envelope
from manifests.spec import load_spec
from manifests.verify import verify_envelope

SPEC = f"""
vendor-domain = "example.com"
class-name = "sensor"
sequence-number = 42
[[component]]
id-hex = ["00"]
digest = "{Digest.of(b"image").hex}"
size = 5
uri = "https://fw.example.com/sensor.bin"
"""


def test_our_envelope_verifies_with_pycose() -> None:
    key = generate_signing_key(Algorithm.ES256)
    envelope = parse_envelope(sign(build_manifest(load_spec(SPEC)), [key]))
    block: Any = PyCoseMessage.decode(envelope.auth_blocks[0].raw)
    block.key = CoseKey.from_pem_public_key(public_pem(key).decode())
    assert block.payload is None
    assert block.verify_signature(detached_payload=envelope.digest_raw)
    assert not block.verify_signature(detached_payload=envelope.digest_raw[:-1] + b"\x00")


def _with_blocks(unsigned: bytes, blocks: list[bytes]) -> bytes:
    env = parse_envelope(unsigned)
    return encode_envelope(
        tagged=True,
        auth_wrapper=[env.digest_raw, *blocks],
        manifest_raw=env.manifest_raw,
        members=env.members,
        integrated={},
    )


def test_pycose_signed_envelope_verifies_here() -> None:
    key = generate_signing_key(Algorithm.ES256)
    unsigned = build_manifest(load_spec(SPEC))
    digest_raw = parse_envelope(unsigned).digest_raw
    msg = Sign1Message(phdr={AlgHeader: Es256}, payload=None)
    msg.key = CoseKey.from_pem_private_key(private_pem(key).decode())
    envelope = _with_blocks(unsigned, [msg.encode(detached_payload=digest_raw)])
    verified = verify_envelope(parse_envelope(envelope), [key.public_anchor("pycose-signer")])
    assert verified.signers == ("pycose-signer",)
    assert verified.identity == parse_envelope(unsigned).digest.hex


def test_pycose_mac0_envelope_verifies_here() -> None:
    secret = bytes(range(32))
    unsigned = build_manifest(load_spec(SPEC))
    digest_raw = parse_envelope(unsigned).digest_raw
    # pycose 1.1.0 cannot MAC a detached payload: let it MAC the attached digest, then detach
    # (the tag covers MAC_structure, which is the same either way, RFC 9052 §6.3).
    msg = Mac0Message(phdr={AlgHeader: HMAC256}, payload=digest_raw, key=SymmetricKey(k=secret))
    attached = cbor2.loads(msg.encode())
    attached.value[2] = None
    envelope = _with_blocks(unsigned, [cbor2.dumps(attached)])
    verified = verify_envelope(parse_envelope(envelope), [hmac_anchor(secret, name="mac")])
    assert verified.signers == ("mac",)
    wrong = hmac_anchor(bytes(32), name="other")
    with pytest.raises(VerificationError):
        verify_envelope(parse_envelope(envelope), [wrong])
