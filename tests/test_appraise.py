"""Appraisal against reference values: a real swtpm measuring firmware images the way our
devices do (PCR 16 + compact event log), and the PSA vector P2's verdict cases."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss import types as tss
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT

from attest import appraise
from attest.appraise import (
    ExpectedImage,
    Policy,
    ReferenceValues,
    UnknownComponents,
    appraise_psa,
    appraise_tpm,
)
from attest.ear_claims import Status
from attest.eventlog import Event, encode_compact_log
from attest.keys import key_from_jwk
from attest.quote import PcrValues
from attest.tpm import PublicKey, TpmAlg, parse_public

from .conftest import vectors_root
from .swtpm import running_swtpm

AK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)  # fmt: skip
FIRMWARE = b"thermostat firmware 1.2.0" * 100
BOOTLOADER = b"bootloader 7" * 50
MANIFEST_DIGEST = hashlib.sha256(b"the manifest").digest()


@dataclass
class Device:
    esapi: ESAPI
    ak: ESYS_TR
    public: PublicKey


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as sw, ESAPI(sw.tcti) as esapi:
        template = tss.TPM2B_PUBLIC(tss.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", AK_ATTRS))
        handle, public = esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)[:2]
        try:
            yield Device(esapi, handle, parse_public(public.marshal()))
        finally:
            esapi.flush_context(handle)


def _boot(device: Device, images: list[tuple[bytes, bytes]], pcr: int = 16) -> bytes:
    """Measure (component id, image) pairs into ``pcr`` (reset first when software may: 16)
    and return the compact event log."""
    esapi, handle = device.esapi, getattr(ESYS_TR, f"PCR{pcr}")
    if pcr == 16:
        esapi.pcr_reset(handle)
    events = []
    for component, image in images:
        digest = hashlib.sha256(image).digest()
        values = tss.TPML_DIGEST_VALUES(
            [tss.TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=tss.TPMU_HA(sha256=digest))]
        )
        esapi.pcr_extend(handle, values)
        events.append(
            Event(pcr, None, {TpmAlg.SHA256: digest}, b"", (component,), MANIFEST_DIGEST, 7)
        )
    return encode_compact_log(events)


def _evidence(device: Device, nonce: bytes, pcr: int = 16) -> tuple[bytes, bytes, PcrValues]:
    attest, signature = device.esapi.quote(device.ak, f"sha256:{pcr}", nonce)
    _, _, values = device.esapi.pcr_read(f"sha256:{pcr}")
    value = bytes(values.digests[0])
    return bytes(attest), signature.marshal(), PcrValues({TpmAlg.SHA256: {pcr: value}})


REFERENCE = ReferenceValues(
    images=(
        ExpectedImage((b"bootloader",), (("sha256", hashlib.sha256(BOOTLOADER).digest()),)),
        ExpectedImage((b"firmware",), (("sha256", hashlib.sha256(FIRMWARE).digest()),)),
    ),
    manifest_digest=MANIFEST_DIGEST,
)


SIMULATION = Policy(allow_resettable_pcrs=True)  # these images sit in PCR 16 (ADR 0006)


def test_the_expected_firmware_is_affirmed(device: Device) -> None:
    log = _boot(device, [(b"bootloader", BOOTLOADER), (b"firmware", FIRMWARE)])
    nonce = secrets.token_bytes(32)
    attest, sig, pcrs = _evidence(device, nonce)
    result = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs, event_log=log,
                          reference=REFERENCE, policy=SIMULATION)  # fmt: skip
    assert result.status is Status.AFFIRMING, result.reasons
    assert (result.vector.executables, result.vector.hardware) == (2, 2)
    # Without the log, the PCR itself must be the extends of the expected images, in order.
    bare = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs, event_log=None,
                        reference=REFERENCE, policy=SIMULATION)  # fmt: skip
    assert bare.status is Status.AFFIRMING, bare.reasons


def test_images_in_a_resettable_pcr_at_most_warn_by_default(device: Device) -> None:
    """Software may reset PCR 16 and extend the expected digests itself: the evidence below is
    exactly what such malware produces, so the default policy cannot affirm it (ADR 0006)."""
    log = _boot(device, [(b"bootloader", BOOTLOADER), (b"firmware", FIRMWARE)])
    nonce = secrets.token_bytes(32)
    attest, sig, pcrs = _evidence(device, nonce)
    for event_log in (log, None):
        result = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs,
                              event_log=event_log, reference=REFERENCE)  # fmt: skip
        assert result.status is Status.WARNING
        assert result.vector.executables == 32
        assert any("PCR 16, which software can reset" in r for r in result.reasons)
    # A bad image stays contraindicated: the cap only ever lowers an approval.
    tampered = _boot(device, [(b"bootloader", BOOTLOADER), (b"firmware", FIRMWARE + b"!")])
    attest, sig, pcrs = _evidence(device, nonce)
    bad = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs, event_log=tampered,
                       reference=REFERENCE)  # fmt: skip
    assert (bad.status, bad.vector.executables) == (Status.CONTRAINDICATED, 96)


def test_only_pcrs_that_a_tpm_reset_alone_clears_let_images_affirm() -> None:
    """16 and 23 reset from locality 0, 17-22 from localities 2-4 (the swtpm refuses to extend
    those from locality 0, so this is checked on the rule itself)."""
    for pcr in range(24):
        why: list[str] = []
        claim = appraise._resettable(pcr, Policy(), why)
        assert (claim, bool(why)) == ((2, False) if pcr < 16 else (32, True)), pcr
        assert appraise._resettable(pcr, SIMULATION, []) == 2


def test_images_in_a_boot_pcr_are_affirmed_by_default(device: Device) -> None:
    """PCR 9 (the boot loader's, by convention) cannot be reset from software: the swtpm
    refuses, so what it holds was extended since the TPM started, and the default affirms."""
    with pytest.raises(TSS2_Exception):
        device.esapi.pcr_reset(ESYS_TR.PCR9)
    log = _boot(device, [(b"bootloader", BOOTLOADER), (b"firmware", FIRMWARE)], pcr=9)
    nonce = secrets.token_bytes(32)
    attest, sig, pcrs = _evidence(device, nonce, pcr=9)
    boot_pcr = ReferenceValues(REFERENCE.images, MANIFEST_DIGEST, pcr=9)
    result = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs, event_log=log,
                          reference=boot_pcr)  # fmt: skip
    assert result.status is Status.AFFIRMING, result.reasons
    assert result.vector.executables == 2


def test_a_tampered_image_is_contraindicated_and_named(device: Device) -> None:
    tampered = FIRMWARE + b"backdoor"
    log = _boot(device, [(b"bootloader", BOOTLOADER), (b"firmware", tampered)])
    nonce = secrets.token_bytes(32)
    attest, sig, pcrs = _evidence(device, nonce)
    result = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs, event_log=log,
                          reference=REFERENCE)  # fmt: skip
    assert result.status is Status.CONTRAINDICATED
    assert result.vector.executables == 96
    (reason,) = [r for r in result.reasons if "firmware" in r or "6669726d77617265" in r]
    assert hashlib.sha256(tampered).hexdigest() in reason
    assert hashlib.sha256(FIRMWARE).hexdigest() in reason


def test_a_log_that_does_not_replay_is_a_crypto_failure(device: Device) -> None:
    log = _boot(device, [(b"bootloader", BOOTLOADER), (b"firmware", FIRMWARE)])
    nonce = secrets.token_bytes(32)
    attest, sig, pcrs = _evidence(device, nonce)
    lying = encode_compact_log(
        [Event(16, None, {TpmAlg.SHA256: hashlib.sha256(FIRMWARE).digest()}, b"", (b"firmware",))]
    )
    assert lying != log
    result = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs, event_log=lying,
                          reference=REFERENCE)  # fmt: skip
    assert result.status is Status.CONTRAINDICATED and result.vector.executables == 99


def test_wrong_nonce_and_unknown_extra_image(device: Device) -> None:
    log = _boot(device, [(b"bootloader", BOOTLOADER), (b"firmware", FIRMWARE), (b"x", b"extra")])
    nonce = secrets.token_bytes(32)
    attest, sig, pcrs = _evidence(device, nonce)
    stale = appraise_tpm(attest, sig, device.public, nonce=secrets.token_bytes(32), pcrs=pcrs,
                         event_log=log, reference=REFERENCE)  # fmt: skip
    assert stale.status is Status.CONTRAINDICATED and stale.vector.instance_identity == 99
    assert "not fresh" in stale.reasons[0]
    extra = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs, event_log=log,
                         reference=REFERENCE)  # fmt: skip
    assert extra.status is Status.WARNING and extra.vector.executables == 33
    strict = Policy(unknown_components=UnknownComponents.CONTRAINDICATE)
    nonce2 = secrets.token_bytes(32)
    attest2, sig2, pcrs2 = _evidence(device, nonce2)
    strict_result = appraise_tpm(
        attest2, sig2, device.public, nonce=nonce2, pcrs=pcrs2, event_log=log,
        reference=REFERENCE, policy=strict,
    )  # fmt: skip
    assert strict_result.status is Status.CONTRAINDICATED


# -- PSA vector P2 (Veraison): the verdict cases of its expected.json ----------------------


@pytest.fixture
def p2() -> Path:
    root = vectors_root()
    if root is None:
        pytest.skip("SUITSRV_VECTORS is not set")
    path = root / "attest" / "psa" / "P2_veraison_psa_good"
    assert path.is_dir(), f"{path} is missing"
    return path


def _p2_reference(folder: Path, bl_digest: str | None = None) -> ReferenceValues:
    facts = json.loads((folder / "expected.json").read_text())
    refvals = facts[
        "reference_values (sha-256 measurement-value digests, from comid-psa-refval.json)"
    ]
    images = []
    for label, digest in refvals.items():
        name = label.split()[0]
        value = bl_digest if (name == "BL" and bl_digest) else digest
        images.append(ExpectedImage((name.encode(),), (("sha256", bytes.fromhex(value)),)))
    return ReferenceValues(tuple(images))


def test_p2_verdicts(p2: Path) -> None:
    token = (p2 / "psa.good.cose").read_bytes()
    key = key_from_jwk(json.loads((p2 / "iak.public.jwk").read_text()), name="iak")
    good_nonce = bytes.fromhex("414a7c174141b3d0e9a1d28af31520f0d42299feac4007ded89d68ae6cd92f19")
    veraison = Policy(mismatch=UnknownComponents.WARN)
    good = appraise_psa(
        token, [key], nonce=good_nonce, reference=_p2_reference(p2), policy=veraison
    )
    assert good.status is Status.AFFIRMING, good.reasons
    claims = good.vector.claims()
    expected = {"instance_identity": 2, "executables": 2, "hardware": 2, "runtime_opaque": 2,
                "storage_opaque": 2}  # fmt: skip
    assert claims == expected
    stale = appraise_psa(token, [key], nonce=bytes.fromhex("75e69d6de79f" * 5 + "75e6"),
                         reference=_p2_reference(p2), policy=veraison)  # fmt: skip
    assert stale.status is Status.CONTRAINDICATED and set(stale.vector.claims().values()) == {99}
    changed = _p2_reference(p2, bl_digest="00" * 32)
    warn = appraise_psa(token, [key], nonce=good_nonce, reference=changed, policy=veraison)
    assert warn.status is Status.WARNING and warn.vector.executables == 33
    # Our own default: reference values from the manifest say what must run: a mismatch is 96.
    assert appraise_psa(token, [key], nonce=good_nonce, reference=changed).vector.executables == 96
    other = key_from_jwk({"kty": "EC", "crv": "P-256", **_other_point()}, name="other")
    bad = appraise_psa(token, [other], nonce=good_nonce, reference=_p2_reference(p2))
    assert bad.status is Status.CONTRAINDICATED and set(bad.vector.claims().values()) == {99}


def _other_point() -> dict[str, str]:
    import base64

    from cryptography.hazmat.primitives.asymmetric import ec

    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

    return {"x": b64(numbers.x), "y": b64(numbers.y)}


def test_golden_pcr_values(device: Device) -> None:
    _boot(device, [(b"firmware", FIRMWARE)])
    nonce = secrets.token_bytes(32)
    attest, sig, pcrs = _evidence(device, nonce)
    pcr16 = pcrs.banks[TpmAlg.SHA256][16]
    good = ReferenceValues(expected_pcrs={(TpmAlg.SHA256, 16): pcr16})
    result = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs, event_log=None,
                          reference=good)  # fmt: skip
    assert result.status is Status.AFFIRMING
    bad = ReferenceValues(expected_pcrs={(TpmAlg.SHA256, 16): bytes(32)})
    result = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs, event_log=None,
                          reference=bad)  # fmt: skip
    assert result.status is Status.CONTRAINDICATED and pcr16.hex() in result.reasons[0]
    nothing = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=pcrs, event_log=None,
                           reference=ReferenceValues())  # fmt: skip
    assert nothing.status is Status.WARNING  # an empty reference proves nothing


def test_quote_without_pcr_values(device: Device) -> None:
    log = _boot(device, [(b"firmware", FIRMWARE)])
    nonce = secrets.token_bytes(32)
    attest, sig, _ = _evidence(device, nonce)
    result = appraise_tpm(attest, sig, device.public, nonce=nonce, pcrs=None, event_log=log,
                          reference=REFERENCE)  # fmt: skip
    assert result.status is Status.WARNING and result.vector.instance_identity == 2
    assert "no PCR values" in result.reasons[0]


def test_a_second_unexpected_measurement_of_a_component_is_a_mismatch() -> None:
    """Review finding: old and new digest both measured for one component must not pass."""
    from attest.appraise import _compare_images

    old, new = hashlib.sha256(b"old").digest(), hashlib.sha256(b"new").digest()
    reference = ReferenceValues((ExpectedImage((b"firmware",), (("sha256", new),)),))
    both = [((b"firmware",), ("sha256", old)), ((b"firmware",), ("sha256", new))]
    claim, reasons = _compare_images(both, reference, Policy())
    assert claim == 96 and old.hex() in reasons[0]
    only_new = [((b"firmware",), ("sha256", new))]
    assert _compare_images(only_new, reference, Policy()) == (2, [])
    # Unnamed measurements (and names no reference uses) are matched by digest.
    assert _compare_images([(None, ("sha256", new))], reference, Policy()) == (2, [])
    assert _compare_images([((b"BL",), ("sha256", new))], reference, Policy())[0] == 2
