"""The public TPM vectors T1 to T5 (../shared/vectors/attest/tpm) agree with their expected.json.

Facts (parsed fields, names, qualifiedSigner, pcrDigest) and verdicts (valid, relabelled PCRs,
replay, missing nonce, SHA-1 policy). Parametrised by file name so a failure names the vector;
skipped when SUITSRV_VECTORS is unset, failing when it is set and a file is missing.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from attest.errors import FreshnessError, UnsupportedError, VerificationError
from attest.quote import (
    parse_pcr_file,
    pcr_values_from_mapping,
    rebooted_since,
    verify_attest_signature,
    verify_quote,
)
from attest.tpm import (
    Attest,
    ClockInfo,
    Hierarchy,
    PublicKey,
    StType,
    TpmAlg,
    hash_bytes,
    parse_attest,
    parse_public,
    parse_signature,
    public_from_pem,
    qualified_name,
    require_ak,
)

from .conftest import VECTORS_ENV, vectors_root

T1 = "T1_keylime_unit_rsassa"
T2 = "T2_keylime_tpm2tools_rsassa"
T3 = "T3_keylime_emulator_series"
T4 = "T4_veraison_enacttrust_ecdsa"
T5 = "T5_goattestation_gcp_vtpm_sha1"
T3_PREFIXES = [f"q{i}" for i in range(6)]


@pytest.fixture
def tpm_vectors() -> Path:
    root = vectors_root()
    if root is None:
        pytest.skip(f"{VECTORS_ENV} is not set")
    path = root / "attest" / "tpm"
    assert path.is_dir(), f"{VECTORS_ENV} is set but {path} is missing"
    return path


def _read(base: Path, name: str) -> bytes:
    path = base / name
    assert path.is_file(), f"vector file {name} is missing"
    return path.read_bytes()


def _expected(base: Path, folder: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_read(base, f"{folder}/expected.json"))
    return data


def _attest_facts(attest: Attest, facts: dict[str, Any]) -> None:
    assert attest.type is StType.ATTEST_QUOTE
    assert attest.clock_info == ClockInfo(
        facts["clock"], facts["resetCount"], facts["restartCount"], bool(facts["safe"])
    )
    assert [[int(s.hash_alg), list(s.pcrs)] for s in attest.pcr_select] == facts["pcrSelect"]
    assert attest.pcr_digest.hex() == facts["pcrDigest"]
    if "qualifiedSigner" in facts:
        assert attest.qualified_signer.hex() == facts["qualifiedSigner"]
        assert attest.extra_data.hex() == facts["extraData"]
        assert attest.firmware_version == int(facts["firmwareVersion"], 16)


# (folder, attest file, signature file, where the facts are in expected.json)
_QUOTES = [
    (T1, "quote.tpms_attest.bin", "quote.tpmt_signature.bin", None),
    (T2, "quote.tpms_attest.bin", "quote.tpmt_signature.bin", None),
    *[
        (T3, f"{p}.tpms_attest.bin", f"{p}.tpmt_signature.bin", i)
        for i, p in enumerate(T3_PREFIXES)
    ],
    (T4, "quote.tpms_attest.bin", "quote.tpmt_signature.bin", None),
    (T5, "quote.tpms_attest.bin", "quote.tpmt_signature.bin", None),
]


@pytest.mark.parametrize(
    ("folder", "attest_file", "sig_file", "index"), _QUOTES, ids=[f"{q[0]}/{q[1]}" for q in _QUOTES]
)
def test_parsed_fields_match_expected(
    tpm_vectors: Path, folder: str, attest_file: str, sig_file: str, index: int | None
) -> None:
    expected = _expected(tpm_vectors, folder)
    facts = expected["attest"] if index is None else expected["quotes"][index]
    raw = _read(tpm_vectors, f"{folder}/{attest_file}")
    attest = parse_attest(raw)
    assert attest.raw == raw
    _attest_facts(attest, facts)
    sig = parse_signature(_read(tpm_vectors, f"{folder}/{sig_file}"))
    assert sig.sig_alg is (TpmAlg.ECDSA if folder == T4 else TpmAlg.RSASSA)
    assert sig.hash_alg is (TpmAlg.SHA1 if folder == T5 else TpmAlg.SHA256)


@pytest.mark.parametrize(
    "pcr_file",
    [f"{T1}/pcrs.tpm2tools.bin", f"{T2}/pcrs.tpm2tools.bin"]
    + [f"{T3}/{p}.pcrs.tpm2tools.bin" for p in T3_PREFIXES],
)
def test_pcr_files_match_expected(tpm_vectors: Path, pcr_file: str) -> None:
    folder, name = pcr_file.split("/")
    expected = _expected(tpm_vectors, folder)
    if folder == T3:
        claimed = {"sha256": expected["quotes"][int(name[1])]["pcrs"]}
    else:
        claimed = expected["pcrs"]
    values = parse_pcr_file(_read(tpm_vectors, pcr_file))
    assert values == pcr_values_from_mapping(claimed)


@pytest.mark.parametrize("folder", [T2, T5])
def test_ak_public_area(tpm_vectors: Path, folder: str) -> None:
    facts = _expected(tpm_vectors, folder)["ak"]
    name = "ak.tpm2b_public.bin" if folder == T2 else "ak.tpmt_public.bin"
    ak = parse_public(_read(tpm_vectors, f"{folder}/{name}"))
    assert int(ak.type) == int(facts["type"], 16)
    assert int(ak.name_alg) == int(facts["nameAlg"], 16)
    assert ak.object_attributes == int(facts["objectAttributes"], 16)
    assert ak.auth_policy.hex() == facts["authPolicy"]
    assert int(ak.scheme) == int(facts["scheme"], 16)
    assert ak.scheme_hash is not None and int(ak.scheme_hash) == int(facts["schemeHash"], 16)
    assert ak.key_bits == facts["keyBits"]
    assert ak.name.hex() == facts["name"]
    require_ak(ak)
    # The PEM beside it is the same key.
    assert public_from_pem(_read(tpm_vectors, f"{folder}/ak.pem")).key == ak.key


def test_t2_names_and_qualified_signer(tpm_vectors: Path) -> None:
    expected = _expected(tpm_vectors, T2)
    ak = parse_public(_read(tpm_vectors, f"{T2}/ak.tpm2b_public.bin"))
    ek = parse_public(_read(tpm_vectors, f"{T2}/ek.tpm2b_public.bin"))
    assert ak.name == _read(tpm_vectors, f"{T2}/ak.name.bin")
    assert ek.name.hex() == expected["ek_name"]
    assert (ek.symmetric, ek.symmetric_bits, ek.symmetric_mode) == (TpmAlg.AES, 128, TpmAlg.CFB)
    assert ek.scheme is TpmAlg.NULL and ek.exponent == 65537
    with pytest.raises(VerificationError, match="lacks sign and has decrypt set"):
        require_ak(ek)  # an EK is a decryption key: it must never be accepted as an AK
    ek_qn = qualified_name(Hierarchy.ENDORSEMENT.qualified_name, ek.name, ek.name_alg)
    attest = parse_attest(_read(tpm_vectors, f"{T2}/quote.tpms_attest.bin"))
    assert qualified_name(ek_qn, ak.name, ak.name_alg) == attest.qualified_signer
    # Under another hierarchy the chain does not reproduce it.
    owner_qn = qualified_name(Hierarchy.OWNER.qualified_name, ek.name, ek.name_alg)
    assert qualified_name(owner_qn, ak.name, ak.name_alg) != attest.qualified_signer


def _t1(tpm_vectors: Path) -> tuple[bytes, bytes, bytes]:
    return (
        _read(tpm_vectors, f"{T1}/quote.tpms_attest.bin"),
        _read(tpm_vectors, f"{T1}/quote.tpmt_signature.bin"),
        _read(tpm_vectors, f"{T1}/ak.pem"),
    )


def test_t1_valid(tpm_vectors: Path) -> None:
    attest, sig, pem = _t1(tpm_vectors)
    expected = _expected(tpm_vectors, T1)
    nonce = expected["nonce_ascii"].encode()
    pcrs = parse_pcr_file(_read(tpm_vectors, f"{T1}/pcrs.tpm2tools.bin"))
    quote = verify_quote(attest, sig, public_from_pem(pem), nonce=nonce, pcrs=pcrs)
    assert {b: dict(v) for b, v in quote.pcrs.items()} == {
        TpmAlg.SHA256: {16: bytes.fromhex(expected["pcrs"]["sha256"]["16"])}
    }
    pinned = public_from_pem(pem, scheme=TpmAlg.RSASSA, scheme_hash=TpmAlg.SHA256)
    assert verify_quote(attest, sig, pinned, nonce=nonce, pcrs=pcrs).attest == quote.attest


def test_t1_negatives(tpm_vectors: Path) -> None:
    attest, sig, pem = _t1(tpm_vectors)
    ak = public_from_pem(pem)
    nonce = b"Ai5M5SjYjnkyv4P7itH1"
    pcrs = parse_pcr_file(_read(tpm_vectors, f"{T1}/pcrs.tpm2tools.bin"))
    flipped = _read(tpm_vectors, f"{T1}/negative/quote_byte5_flipped.tpms_attest.bin")
    assert flipped[5] == attest[5] ^ 1 and flipped[:5] + flipped[6:] == attest[:5] + attest[6:]
    with pytest.raises(VerificationError, match="signature does not verify") as info:
        verify_quote(flipped, sig, ak, nonce=nonce, pcrs=pcrs)
    assert not isinstance(info.value, FreshnessError)
    with pytest.raises(FreshnessError, match="not the issued nonce"):
        verify_quote(attest, sig, ak, nonce=b"a" + nonce[1:], pcrs=pcrs)
    sha1_pinned = public_from_pem(pem, scheme=TpmAlg.RSASSA, scheme_hash=TpmAlg.SHA1)
    with pytest.raises(VerificationError, match="not the AK's RSASSA/SHA1"):
        verify_quote(attest, sig, sha1_pinned, nonce=nonce, pcrs=pcrs)


def test_t2_valid_with_public_area_and_pem(tpm_vectors: Path) -> None:
    attest = _read(tpm_vectors, f"{T2}/quote.tpms_attest.bin")
    sig = _read(tpm_vectors, f"{T2}/quote.tpmt_signature.bin")
    nonce = _read(tpm_vectors, f"{T2}/nonce.bin")
    assert nonce.hex() == _expected(tpm_vectors, T2)["nonce_hex"]
    pcrs = parse_pcr_file(_read(tpm_vectors, f"{T2}/pcrs.tpm2tools.bin"))
    for ak in (
        parse_public(_read(tpm_vectors, f"{T2}/ak.tpm2b_public.bin")),
        public_from_pem(_read(tpm_vectors, f"{T2}/ak.pem")),
    ):
        quote = verify_quote(attest, sig, ak, nonce=nonce, pcrs=pcrs)
        assert sorted(quote.pcrs[TpmAlg.SHA256]) == [15, 16, 22]


def test_t2_relabelled_pcrs_rejected(tpm_vectors: Path) -> None:
    attest = _read(tpm_vectors, f"{T2}/quote.tpms_attest.bin")
    relabelled = pcr_values_from_mapping(
        json.loads(_read(tpm_vectors, f"{T2}/negative/pcrs_relabelled.json"))
    )
    # The values alone still hash to pcrDigest: only the signed selection exposes the relabel.
    values = b"".join(relabelled.banks[TpmAlg.SHA256][i] for i in (0, 1, 2))
    assert hash_bytes(TpmAlg.SHA256, values) == parse_attest(attest).pcr_digest
    with pytest.raises(VerificationError, match="not supplied: sha256:15, sha256:16, sha256:22"):
        verify_quote(
            attest,
            _read(tpm_vectors, f"{T2}/quote.tpmt_signature.bin"),
            parse_public(_read(tpm_vectors, f"{T2}/ak.tpm2b_public.bin")),
            nonce=_read(tpm_vectors, f"{T2}/nonce.bin"),
            pcrs=relabelled,
        )


def _t3(tpm_vectors: Path, prefix: str) -> tuple[bytes, bytes, bytes, Any]:
    index = int(prefix[1])
    return (
        _read(tpm_vectors, f"{T3}/{prefix}.tpms_attest.bin"),
        _read(tpm_vectors, f"{T3}/{prefix}.tpmt_signature.bin"),
        _expected(tpm_vectors, T3)["quotes"][index]["nonce_ascii"].encode(),
        parse_pcr_file(_read(tpm_vectors, f"{T3}/{prefix}.pcrs.tpm2tools.bin")),
    )


def _t2_ak(tpm_vectors: Path) -> PublicKey:
    return parse_public(_read(tpm_vectors, f"{T2}/ak.tpm2b_public.bin"))


@pytest.mark.parametrize("prefix", T3_PREFIXES)
def test_t3_each_quote_valid_with_its_nonce(tpm_vectors: Path, prefix: str) -> None:
    attest, sig, nonce, pcrs = _t3(tpm_vectors, prefix)
    verify_quote(attest, sig, _t2_ak(tpm_vectors), nonce=nonce, pcrs=pcrs)


def test_t3_clock_chain_and_replays(tpm_vectors: Path) -> None:
    ak = _t2_ak(tpm_vectors)
    previous: ClockInfo | None = None
    clocks = []
    for prefix in T3_PREFIXES:
        attest, sig, nonce, pcrs = _t3(tpm_vectors, prefix)
        quote = verify_quote(attest, sig, ak, nonce=nonce, pcrs=pcrs, previous=previous)
        if previous is not None:
            assert not rebooted_since(previous, quote.attest.clock_info)
        previous = quote.attest.clock_info
        clocks.append(previous.clock)
    assert clocks == sorted(set(clocks)) and (clocks[0], clocks[-1]) == (34970, 44715)
    q0, sig0, nonce0, pcrs0 = _t3(tpm_vectors, "q0")
    q5_nonce = _t3(tpm_vectors, "q5")[2]
    with pytest.raises(FreshnessError, match="not the issued nonce"):
        verify_quote(q0, sig0, ak, nonce=q5_nonce, pcrs=pcrs0)
    # Even with its own nonce (a nonce store that failed), q0's clock is behind q5's.
    with pytest.raises(FreshnessError, match="clock did not advance"):
        verify_quote(q0, sig0, ak, nonce=nonce0, pcrs=pcrs0, previous=previous)


def test_t4_signature_valid_but_no_nonce(tpm_vectors: Path) -> None:
    attest = _read(tpm_vectors, f"{T4}/quote.tpms_attest.bin")
    sig = _read(tpm_vectors, f"{T4}/quote.tpmt_signature.bin")
    # basic.token = node-id (16 B) || u16 len || TPMS_ATTEST || TPMT_SIGNATURE
    token = _read(tpm_vectors, f"{T4}/basic.token")
    assert token[16:18] == len(attest).to_bytes(2, "big")
    assert token[18:] == attest + sig
    ak = public_from_pem(_read(tpm_vectors, f"{T4}/ak.pem"))
    assert verify_attest_signature(attest, sig, ak).sig_alg is TpmAlg.ECDSA
    parsed = parse_attest(attest)
    assert parsed.extra_data == b"" and not parsed.clock_info.safe
    with pytest.raises(FreshnessError, match="carries no nonce"):
        verify_quote(attest, sig, ak, nonce=bytes(32), pcrs=None)
    with pytest.raises(FreshnessError, match="no nonce was issued"):
        verify_quote(attest, sig, ak, nonce=b"", pcrs=None)


def test_t5_sha1_policy_and_freshness(tpm_vectors: Path) -> None:
    attest = _read(tpm_vectors, f"{T5}/quote.tpms_attest.bin")
    sig = _read(tpm_vectors, f"{T5}/quote.tpmt_signature.bin")
    ak = parse_public(_read(tpm_vectors, f"{T5}/ak.tpmt_public.bin"))
    pcrs = pcr_values_from_mapping(json.loads(_read(tpm_vectors, f"{T5}/pcrs.json")))
    # The go-attestation test data holds the same bytes (base64).
    source = json.loads(_read(tpm_vectors, f"{T5}/windows_gcp_shielded_vm.json"))
    assert base64.b64decode(source["AK"]["Public"]) == ak.raw
    assert base64.b64decode(source["Quote"]["Quote"]) == attest
    assert base64.b64decode(source["Quote"]["Signature"]) == sig
    with pytest.raises(UnsupportedError, match="SHA-1"):
        verify_quote(attest, sig, ak, nonce=bytes(32), pcrs=pcrs)
    # Allowed by policy, the signature verifies and only freshness fails.
    assert verify_attest_signature(attest, sig, ak, allow_sha1=True).hash_alg is TpmAlg.SHA1
    with pytest.raises(FreshnessError, match="carries no nonce"):
        verify_quote(attest, sig, ak, nonce=bytes(32), pcrs=pcrs, allow_sha1=True)
    # pcrDigest = SHA-1 (the scheme's hash) over PCR0..23 of the SHA-1 bank.
    parsed = parse_attest(attest)
    values = b"".join(pcrs.banks[TpmAlg.SHA1][i] for i in range(24))
    assert hash_bytes(TpmAlg.SHA1, values) == parsed.pcr_digest
    assert parsed.clock_info.reset_count == 1045281252  # obfuscated: not an owner-visible count


def test_t5_key_of_another_vector_fails(tpm_vectors: Path) -> None:
    attest = _read(tpm_vectors, f"{T5}/quote.tpms_attest.bin")
    sig = _read(tpm_vectors, f"{T5}/quote.tpmt_signature.bin")
    with pytest.raises(VerificationError, match="does not verify"):
        verify_attest_signature(attest, sig, public_from_pem(_t1(tpm_vectors)[2]), allow_sha1=True)
