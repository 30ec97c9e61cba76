"""Quote verification against a real TPM: swtpm driven through tpm2-pytss (nothing mocked).

AKs live in the endorsement hierarchy so clockInfo is not obfuscated (notes/tpm-stack.md §3).
Each verdict is cross-checked with tpm2-tools' ``tpm2_checkquote`` where that tool has an
opinion; ours is stricter by design on SHA-1 policy and on non-quote structures.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tpm2_pytss import ESAPI
from tpm2_pytss import types as tss
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RH, TPM2_ST, TPM2_SU, TPMA_OBJECT

from attest.errors import FreshnessError, UnsupportedError, VerificationError
from attest.quote import PcrValues, rebooted_since, verify_attest_signature, verify_quote
from attest.tpm import (
    ClockInfo,
    Hierarchy,
    PublicKey,
    StType,
    TpmAlg,
    parse_attest,
    parse_public,
    parse_signature,
    public_from_pem,
    qualified_name,
)

from .swtpm import running_swtpm

FIRMWARE = b"suitsrv test firmware image\n" * 64
# DESIGN.md: the device extends PCR16 (SHA-256 bank) once with the image's digest after a reset.
PCR16 = hashlib.sha256(bytes(32) + hashlib.sha256(FIRMWARE).digest()).digest()
PCR16_SHA1 = bytes(20)  # the SHA-1 bank of PCR16 is only reset, never extended
AK_ATTRS = TPMA_OBJECT.parse(
    "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign_encrypt"
)


@dataclass
class Ak:
    handle: ESYS_TR
    public: PublicKey
    pem: bytes
    tpm_name: bytes
    tpm_qualified_name: bytes


@dataclass
class Tpm:
    esapi: ESAPI
    ecc: Ak
    rsa: Ak
    parent_name: bytes


def _ak(esapi: ESAPI, handle: ESYS_TR) -> Ak:
    public, name, qualified = esapi.read_public(handle)
    return Ak(
        handle, parse_public(public.marshal()), public.to_pem(), bytes(name), bytes(qualified)
    )


def _primary_ak(esapi: ESAPI, template: str, attrs: TPMA_OBJECT = AK_ATTRS) -> Ak:
    public = tss.TPM2B_PUBLIC(tss.TPMT_PUBLIC.parse(template, attrs))
    handle = esapi.create_primary(None, public, ESYS_TR.ENDORSEMENT)[0]
    return _ak(esapi, handle)


@contextmanager
def _temporary_ak(esapi: ESAPI, template: str, attrs: TPMA_OBJECT = AK_ATTRS) -> Iterator[Ak]:
    # A bare swtpm has 3 transient slots and no resource manager: flush what we load.
    ak = _primary_ak(esapi, template, attrs)
    try:
        yield ak
    finally:
        esapi.flush_context(ak.handle)


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tpm]:
    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as sw, ESAPI(sw.tcti) as esapi:
        # The ECC AK sits under an EK-like storage key, as keylime does, so its qualified name
        # exercises the chain hierarchy → parent → AK; the RSA AK is a primary.
        storage = tss.TPMT_PUBLIC.parse(
            "ecc256:aes128cfb", TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS
        )
        parent = esapi.create_primary(None, tss.TPM2B_PUBLIC(storage), ESYS_TR.ENDORSEMENT)[0]
        parent_name = bytes(esapi.read_public(parent)[1])
        template = tss.TPM2B_PUBLIC(tss.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", AK_ATTRS))
        private, public = esapi.create(parent, None, template)[:2]
        ecc = _ak(esapi, esapi.load(parent, private, public))
        esapi.flush_context(parent)
        rsa = _primary_ak(esapi, "rsa2048:rsassa-sha256:null")
        esapi.pcr_reset(ESYS_TR.PCR16)
        digest = tss.TPMT_HA(
            hashAlg=TPM2_ALG.SHA256, digest=tss.TPMU_HA(sha256=hashlib.sha256(FIRMWARE).digest())
        )
        esapi.pcr_extend(ESYS_TR.PCR16, tss.TPML_DIGEST_VALUES([digest]))
        yield Tpm(esapi, ecc, rsa, parent_name)


def _quote(esapi: ESAPI, ak: Ak, nonce: bytes, selection: str = "sha256:16") -> tuple[bytes, bytes]:
    attest, signature = esapi.quote(ak.handle, selection, nonce)
    return bytes(attest), signature.marshal()


def _pcrs(**banks: dict[int, bytes]) -> PcrValues:
    return PcrValues({TpmAlg[name.upper()]: values for name, values in banks.items()})


def _checkquote(
    tmp: Path, pem: bytes, attest: bytes, sig: bytes, nonce: bytes, selection: str, values: bytes
) -> bool:
    """tpm2-tools' verdict (notes/tpm-stack.md §3): raw PCR values in selection order."""
    files = {"ak.pem": pem, "quote.attest": attest, "quote.sig": sig, "pcrs.bin": values}
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    hash_name = "sha1" if parse_signature(sig).hash_alg is TpmAlg.SHA1 else "sha256"
    result = subprocess.run(
        ["tpm2_checkquote", "-u", str(tmp / "ak.pem"), "-m", str(tmp / "quote.attest"),
         "-s", str(tmp / "quote.sig"), "-f", str(tmp / "pcrs.bin"), "-l", selection,
         "-g", hash_name, "-q", nonce.hex()],
        capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    return result.returncode == 0


def test_names_and_qualified_signer(tpm: Tpm) -> None:
    for ak in (tpm.ecc, tpm.rsa):
        assert ak.public.name == ak.tpm_name
        public = tpm.esapi.read_public(ak.handle)[0]
        assert parse_public(public.publicArea.marshal()) == ak.public  # bare tss.TPMT_PUBLIC
        assert bytes(public.get_name()) == ak.public.name
    ecc, endorsement = tpm.ecc.public, Hierarchy.ENDORSEMENT.qualified_name
    parent_qn = qualified_name(endorsement, tpm.parent_name, TpmAlg.SHA256)
    expected = qualified_name(parent_qn, ecc.name, ecc.name_alg)
    assert expected == tpm.ecc.tpm_qualified_name
    attest = parse_attest(_quote(tpm.esapi, tpm.ecc, secrets.token_bytes(32))[0])
    assert attest.qualified_signer == expected
    rsa = tpm.rsa.public
    assert qualified_name(endorsement, rsa.name, rsa.name_alg) == tpm.rsa.tpm_qualified_name


def test_parse_agrees_with_tpm2_pytss(tpm: Tpm) -> None:
    nonce = secrets.token_bytes(32)
    raw, sig_raw = _quote(tpm.esapi, tpm.ecc, nonce, "sha256:0,7,16+sha1:16")
    ours, theirs = parse_attest(raw), tss.TPMS_ATTEST.unmarshal(raw)[0]
    assert ours.extra_data == bytes(theirs.extraData) == nonce
    assert ours.qualified_signer == bytes(theirs.qualifiedSigner)
    clock = theirs.clockInfo
    their_clock = (clock.clock, clock.resetCount, clock.restartCount, bool(clock.safe))
    assert ours.clock_info == ClockInfo(*their_clock)
    assert ours.firmware_version == theirs.firmwareVersion
    selection = [(TpmAlg.SHA256, (0, 7, 16)), (TpmAlg.SHA1, (16,))]
    assert [(s.hash_alg, s.pcrs) for s in ours.pcr_select] == selection
    assert ours.pcr_digest == bytes(theirs.attested.quote.pcrDigest)
    sig, their_sig = parse_signature(sig_raw), tss.TPMT_SIGNATURE.unmarshal(sig_raw)[0]
    assert sig.sig_alg is TpmAlg.ECDSA and sig.hash_alg is TpmAlg.SHA256
    assert sig.r == int.from_bytes(bytes(their_sig.signature.ecdsa.signatureR), "big")
    assert sig.s == int.from_bytes(bytes(their_sig.signature.ecdsa.signatureS), "big")


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
def test_valid_quote_agrees_with_checkquote(tpm: Tpm, kind: str, tmp_path: Path) -> None:
    ak = tpm.ecc if kind == "ecc" else tpm.rsa
    nonce = secrets.token_bytes(32)
    attest, sig = _quote(tpm.esapi, ak, nonce)
    for key in (ak.public, public_from_pem(ak.pem)):
        quote = verify_quote(attest, sig, key, nonce=nonce, pcrs=_pcrs(sha256={16: PCR16}))
        assert {bank: dict(pcrs) for bank, pcrs in quote.pcrs.items()} == {
            TpmAlg.SHA256: {16: PCR16}
        }
    assert _checkquote(tmp_path, ak.pem, attest, sig, nonce, "sha256:16", PCR16)


def test_counters_are_not_obfuscated(tpm: Tpm) -> None:
    # Obfuscation is per key: equal counters from two AKs show the endorsement hierarchy works.
    nonce = secrets.token_bytes(32)
    ecc = parse_attest(_quote(tpm.esapi, tpm.ecc, nonce)[0])
    rsa = parse_attest(_quote(tpm.esapi, tpm.rsa, nonce)[0])
    assert ecc.clock_info.reset_count == rsa.clock_info.reset_count
    assert ecc.clock_info.restart_count == rsa.clock_info.restart_count == 0
    assert ecc.firmware_version == rsa.firmware_version


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# case → (our error, its message); the test applies the case to a fresh quote.
_NEGATIVE = {
    "wrong-nonce": (FreshnessError, "not the issued nonce"),
    "attest-bit-flip": (VerificationError, "does not verify"),
    "signature-bit-flip": (VerificationError, "does not verify"),
    "wrong-pcr-value": (VerificationError, "pcrDigest"),
    "relabelled-pcr": (VerificationError, "not supplied: sha256:16"),
    "other-ak": (VerificationError, "does not fit"),
}


@pytest.mark.parametrize("kind", ["ecc", "rsa"])
@pytest.mark.parametrize("case", sorted(_NEGATIVE))
def test_negative_matrix_agrees_with_checkquote(
    tpm: Tpm, kind: str, case: str, tmp_path: Path
) -> None:
    ak, other = (tpm.ecc, tpm.rsa) if kind == "ecc" else (tpm.rsa, tpm.ecc)
    nonce = secrets.token_bytes(32)
    attest, sig = _quote(tpm.esapi, ak, nonce)
    key, pem, pcr, value, claimed_nonce = ak.public, ak.pem, 16, PCR16, nonce
    if case == "wrong-nonce":
        claimed_nonce = secrets.token_bytes(32)
    elif case == "attest-bit-flip":
        attest = _flip(attest, len(attest) - 40)  # in the signed PCR selection
    elif case == "signature-bit-flip":
        sig = _flip(sig, len(sig) - 1)
    elif case == "wrong-pcr-value":
        value = hashlib.sha256(b"another image").digest()
    elif case == "relabelled-pcr":
        pcr = 15
    else:
        key, pem = other.public, other.pem
    error, message = _NEGATIVE[case]
    with pytest.raises(error, match=message):
        verify_quote(attest, sig, key, nonce=claimed_nonce, pcrs=_pcrs(sha256={pcr: value}))
    if case != "relabelled-pcr":
        # tpm2_checkquote 5.4 compares only H(values) with pcrDigest, never the claimed
        # selection with the signed one, so it accepts a relabel; it has no say there.
        assert not _checkquote(tmp_path, pem, attest, sig, claimed_nonce, f"sha256:{pcr}", value)


def test_digest_over_two_banks_needs_both(tpm: Tpm, tmp_path: Path) -> None:
    nonce = secrets.token_bytes(32)
    attest, sig = _quote(tpm.esapi, tpm.ecc, nonce, "sha256:16+sha1:16")
    both = _pcrs(sha256={16: PCR16}, sha1={16: PCR16_SHA1})
    one = _pcrs(sha256={16: PCR16})
    with pytest.raises(UnsupportedError, match="SHA-1 PCR bank"):
        verify_quote(attest, sig, tpm.ecc.public, nonce=nonce, pcrs=both)
    with pytest.raises(VerificationError, match="not supplied: sha1:16"):
        verify_quote(attest, sig, tpm.ecc.public, nonce=nonce, pcrs=one, allow_sha1=True)
    quote = verify_quote(attest, sig, tpm.ecc.public, nonce=nonce, pcrs=both, allow_sha1=True)
    assert set(quote.pcrs) == {TpmAlg.SHA256, TpmAlg.SHA1}
    pem = tpm.ecc.pem
    assert _checkquote(tmp_path, pem, attest, sig, nonce, "sha256:16+sha1:16", PCR16 + PCR16_SHA1)
    assert not _checkquote(tmp_path, pem, attest, sig, nonce, "sha256:16", PCR16)


def test_signed_non_quotes_are_rejected_after_the_signature(tpm: Tpm) -> None:
    nonce = secrets.token_bytes(32)
    ak = tpm.ecc
    null = tss.TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
    certify, certify_sig = tpm.esapi.certify(ak.handle, ak.handle, nonce, null)
    time_info, time_sig = tpm.esapi.get_time(ak.handle, nonce, null)
    for raw, sig_obj, st_type in (
        (bytes(certify), certify_sig, StType.ATTEST_CERTIFY),
        (bytes(time_info), time_sig, StType.ATTEST_TIME),
    ):
        sig = sig_obj.marshal()
        verify_attest_signature(raw, sig, ak.public)  # validly signed by the AK
        parsed = parse_attest(raw)
        assert parsed.type is st_type and parsed.extra_data == nonce
        with pytest.raises(VerificationError, match="not a quote"):
            verify_quote(raw, sig, ak.public, nonce=nonce, pcrs=None)
        with pytest.raises(VerificationError, match="does not verify"):
            verify_quote(raw, _flip(sig, len(sig) - 1), ak.public, nonce=nonce, pcrs=None)
    certified = parse_attest(bytes(certify)).attested
    assert certified == (ak.tpm_name, ak.tpm_qualified_name)  # TPMS_CERTIFY_INFO
    timed = parse_attest(bytes(time_info))
    # TPMS_TIME_ATTEST_INFO repeats the header's clockInfo and firmwareVersion.
    clock = timed.clock_info
    assert timed.attested[1:] == (
        clock.clock,
        clock.reset_count,
        clock.restart_count,
        clock.safe,
        timed.firmware_version,
    )


def _later_quote(esapi: ESAPI, ak: Ak, after: int) -> tuple[bytes, bytes, bytes]:
    # Clock has millisecond resolution: wait for it to move so the quotes are ordered.
    while True:
        nonce = secrets.token_bytes(32)
        attest, sig = _quote(esapi, ak, nonce)
        if parse_attest(attest).clock_info.clock > after:
            return attest, sig, nonce
        time.sleep(0.002)


def test_replayed_quote_rejected_by_clock(tpm: Tpm) -> None:
    ak, pcrs = tpm.ecc, _pcrs(sha256={16: PCR16})
    a1, s1, n1 = _later_quote(tpm.esapi, ak, -1)
    first = verify_quote(a1, s1, ak.public, nonce=n1, pcrs=pcrs)
    a2, s2, n2 = _later_quote(tpm.esapi, ak, first.attest.clock_info.clock)
    second = verify_quote(a2, s2, ak.public, nonce=n2, pcrs=pcrs, previous=first.attest.clock_info)
    assert not rebooted_since(first.attest.clock_info, second.attest.clock_info)
    for previous in (first.attest.clock_info, second.attest.clock_info):
        with pytest.raises(FreshnessError, match="clock did not advance"):
            verify_quote(a1, s1, ak.public, nonce=n1, pcrs=pcrs, previous=previous)


def test_sha1_only_evidence(tpm: Tpm, tmp_path: Path) -> None:
    nonce = secrets.token_bytes(32)
    with _temporary_ak(tpm.esapi, "ecc256:ecdsa-sha1:null") as ak:
        attest, sig = _quote(tpm.esapi, ak, nonce, "sha1:16")
    pcrs = _pcrs(sha1={16: PCR16_SHA1})
    with pytest.raises(UnsupportedError, match="SHA-1 signatures"):
        verify_quote(attest, sig, ak.public, nonce=nonce, pcrs=pcrs)
    verify_quote(attest, sig, ak.public, nonce=nonce, pcrs=pcrs, allow_sha1=True)
    # tpm2_checkquote has no algorithm policy: it agrees with ours when SHA-1 is allowed.
    assert _checkquote(tmp_path, ak.pem, attest, sig, nonce, "sha1:16", PCR16_SHA1)


def test_rsapss_quote(tpm: Tpm) -> None:
    nonce = secrets.token_bytes(32)
    with _temporary_ak(tpm.esapi, "rsa2048:rsapss-sha256:null") as ak:
        attest, sig = _quote(tpm.esapi, ak, nonce)
    assert parse_signature(sig).sig_alg is TpmAlg.RSAPSS and ak.public.scheme is TpmAlg.RSAPSS
    pcrs = _pcrs(sha256={16: PCR16})
    verify_quote(attest, sig, ak.public, nonce=nonce, pcrs=pcrs)
    # The oracle is cryptography with an explicit salt: this TPM uses salt = digest length
    # (the FIPS convention), which tpm2_checkquote 5.4 fails to verify.
    key = ak.public.key
    assert isinstance(key, rsa.RSAPublicKey)
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
    key.verify(parse_signature(sig).signature, attest, pss, hashes.SHA256())
    with pytest.raises(VerificationError, match="does not verify"):
        verify_quote(_flip(attest, 10), sig, ak.public, nonce=nonce, pcrs=pcrs)
    # The RSASSA AK of the fixture pins its scheme: a PSS signature does not fit it.
    with pytest.raises(VerificationError, match="not the AK's RSASSA/SHA256"):
        verify_quote(attest, sig, tpm.rsa.public, nonce=nonce, pcrs=pcrs)


def test_unrestricted_key_cannot_vouch_for_a_quote(tpm: Tpm) -> None:
    # A non-restricted signing key signs any digest, including a forged tss.TPMS_ATTEST: only
    # require_ak (through a parsed public area) stops it; a bare PEM key cannot.
    nonce = secrets.token_bytes(32)
    genuine = parse_attest(_quote(tpm.esapi, tpm.ecc, nonce)[0])
    forged_pcr = hashlib.sha256(b"forged").digest()
    forged = bytearray(genuine.raw)
    forged[-32:] = hashlib.sha256(forged_pcr).digest()
    attrs = AK_ATTRS & ~TPMA_OBJECT.RESTRICTED
    with _temporary_ak(tpm.esapi, "ecc256:ecdsa-sha256", attrs) as key:
        ticket = tss.TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
        scheme = tss.TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
        scheme.details.any.hashAlg = TPM2_ALG.SHA256
        digest = hashlib.sha256(bytes(forged)).digest()
        sig = tpm.esapi.sign(key.handle, digest, scheme, ticket).marshal()
    pcrs = _pcrs(sha256={16: forged_pcr})
    with pytest.raises(VerificationError, match="lacks restricted"):
        verify_quote(bytes(forged), sig, key.public, nonce=nonce, pcrs=pcrs)
    quote = verify_quote(bytes(forged), sig, public_from_pem(key.pem), nonce=nonce, pcrs=pcrs)
    assert quote.pcrs[TpmAlg.SHA256][16] == forged_pcr


def test_restart_and_reset(tmp_path: Path) -> None:
    quotes: list[tuple[bytes, bytes, bytes, PublicKey]] = []
    for shutdown in (TPM2_SU.STATE, TPM2_SU.CLEAR, None, TPM2_SU.CLEAR):
        with running_swtpm(tmp_path / "state") as sw, ESAPI(sw.tcti) as esapi:
            # The endorsement seed persists in the state dir: the same template, the same AK.
            ak = _primary_ak(esapi, "ecc256:ecdsa-sha256:null")
            nonce = secrets.token_bytes(32)
            quotes.append((*_quote(esapi, ak, nonce), nonce, ak.public))
            if shutdown is not None:
                esapi.shutdown(shutdown)
    assert len({q[3] for q in quotes}) == 1  # PublicKey is hashable: compares raw bytes

    def check(i: int, previous: ClockInfo | None) -> ClockInfo:
        attest, sig, nonce, ak = quotes[i]
        quote = verify_quote(attest, sig, ak, nonce=nonce, pcrs=None, previous=previous)
        return quote.attest.clock_info

    c0 = check(0, None)
    # Shutdown(STATE) + Startup(CLEAR) is a TPM Restart: restartCount grows, no reboot.
    c1 = check(1, c0)
    assert (c1.reset_count, c1.restart_count) == (c0.reset_count, c0.restart_count + 1)
    assert not rebooted_since(c0, c1)
    # Shutdown(CLEAR) + Startup(CLEAR) is a TPM Reset: resetCount grows, restartCount is zeroed.
    c2 = check(2, c1)
    assert (c2.reset_count, c2.restart_count) == (c1.reset_count + 1, 0)
    assert rebooted_since(c1, c2) and rebooted_since(c0, c2)
    with pytest.raises(FreshnessError, match="resetCount went back"):
        check(1, c2)
    with pytest.raises(FreshnessError, match="restartCount went back"):
        check(1, replace(c1, restart_count=c1.restart_count + 1))
    # The third boot ended without Shutdown (a power loss): the next quote's clock is not safe,
    # which is no reason to refuse it (the nonce carries freshness); it is a reboot.
    c3 = check(3, c2)
    assert not c3.safe and rebooted_since(c2, c3)
