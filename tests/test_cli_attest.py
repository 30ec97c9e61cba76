"""``suitsrv attest quote | token`` on real files: the public vectors (SUITSRV_VECTORS), a token
signed here, and a live swtpm quoted by tpm2-tools' own ``tpm2_quote``. Exit 0 only when
affirming, 1 for any other verdict, 2 for usage errors."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tpm2_pytss import ESAPI
from tpm2_pytss import types as tss
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT

from attest import _cbor, _cose
from attest.ear import public_jwk
from attest.eventlog import Event, encode_compact_log
from attest.tpm import TpmAlg
from suitsrv.cli.main import main

from .conftest import VECTORS_ENV, examples, vectors_root
from .swtpm import running_swtpm
from .token_helpers import ES256, P256

T1 = "T1_keylime_unit_rsassa"
T2 = "T2_keylime_tpm2tools_rsassa"
P1 = "P1_rfc9783_examples"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """main() as the console script runs it (argparse's own errors exit 2 too); stdout."""
    code, out, _ = run_err(argv, capsys)
    return code, out


def run_err(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def ear(out: str) -> dict[str, Any]:
    """The one submod of the printed EAR claims."""
    claims: dict[str, Any] = json.loads(out)
    assert claims["ear_verifier_id"]["developer"] == "suitsrv"
    (submod,) = claims["submods"].values()
    assert isinstance(submod, dict)
    return submod


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def vectors(kind: str, folder: str) -> Path:
    root = vectors_root()
    if root is None:
        pytest.skip(f"{VECTORS_ENV} is not set")
    path = root / "attest" / kind / folder
    assert path.is_dir(), f"{VECTORS_ENV} is set but {path} is missing"
    return path


def facts(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "expected.json").read_text())
    return data


# --- TPM quotes: the keylime vectors --------------------------------------------------------


def t1_args(t1: Path, **changes: str) -> list[str]:
    args = {
        "--ak": str(t1 / "ak.pem"),
        "--attest": str(t1 / "quote.tpms_attest.bin"),
        "--signature": str(t1 / "quote.tpmt_signature.bin"),
        "--nonce": facts(t1)["nonce_hex"],
        "--pcrs": str(t1 / "pcrs.tpm2tools.bin"),
        **changes,
    }
    return ["attest", "quote", *(x for pair in args.items() for x in pair)]


def test_t1_with_its_reference_value_is_affirmed(capsys: pytest.CaptureFixture[str]) -> None:
    t1 = vectors("tpm", T1)
    refval = facts(t1)["pcrs"]["sha256"]["16"]
    code, out = run([*t1_args(t1), "--expect", f"sha256:16={refval}", "--json"], capsys)
    submod = ear(out)
    assert code == 0, submod
    assert submod["ear_status"] == "affirming"
    assert submod["eat_nonce"] == b64url(bytes.fromhex(facts(t1)["nonce_hex"]))
    assert submod["ear_trustworthiness_vector"] == {"instance-identity": 2, "executables": 2}
    assert any("AK given as PEM" in r for r in submod["suitsrv.reasons"])
    # The readable form says the same.
    code, out = run([*t1_args(t1), "--expect", f"sha256:16={refval}"], capsys)
    assert code == 0 and out.startswith("status: affirming")


@pytest.mark.parametrize(
    ("change", "status", "why"),
    [
        # keylime's negative: the nonce's first character "A" changed to "a"
        ({"--nonce": "61" + "69354d35536a596a6e6b797634503769744831"}, "contraindicated",
         "not fresh"),
        ({"--attest": "negative/quote_byte5_flipped.tpms_attest.bin"}, "contraindicated",
         "signature does not verify"),
        ({"--expect": "sha256:16=" + "00" * 32}, "contraindicated", "expected 0000"),
        ({}, "warning", "no event log and no reference values"),
    ],
    ids=["wrong-nonce", "quote_byte5_flipped", "wrong-refval", "no-refval"],
)  # fmt: skip
def test_t1_is_not_affirmed(
    change: dict[str, str], status: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    t1 = vectors("tpm", T1)
    change = {k: str(t1 / v) if k == "--attest" else v for k, v in change.items()}
    code, out = run([*t1_args(t1, **change), "--json"], capsys)
    submod = ear(out)
    assert code == 1
    assert submod["ear_status"] == status
    assert any(why in r for r in submod["suitsrv.reasons"]), submod["suitsrv.reasons"]


def test_malformed_pcr_values_are_a_verdict_not_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t1 = vectors("tpm", T1)
    for name, data in {"short.bin": b"\x01\x00", "bad.json": b'{"sha256": {"16": "zz"}}'}.items():
        (tmp_path / name).write_bytes(data)
        code, out = run([*t1_args(t1, **{"--pcrs": str(tmp_path / name)}), "--json"], capsys)
        submod = ear(out)
        assert code == 1 and submod["ear_status"] == "contraindicated"
        assert set(submod["ear_trustworthiness_vector"].values()) == {99}


def t2_args(t2: Path, pcrs: Path, refvals: dict[str, str]) -> list[str]:
    return [
        "attest", "quote", "--ak", str(t2 / "ak.tpm2b_public.bin"),
        "--attest", str(t2 / "quote.tpms_attest.bin"),
        "--signature", str(t2 / "quote.tpmt_signature.bin"),
        "--nonce", (t2 / "nonce.bin").read_bytes().hex(), "--pcrs", str(pcrs), "--json",
        *(x for pcr, value in refvals.items() for x in ("--expect", f"sha256:{pcr}={value}")),
    ]  # fmt: skip


def test_t2_tpm2b_public_and_both_pcr_file_forms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t2 = vectors("tpm", T2)
    refvals = facts(t2)["pcrs"]["sha256"]
    code, out = run(t2_args(t2, t2 / "pcrs.tpm2tools.bin", refvals), capsys)
    assert code == 0, out
    # A TPM2B_PUBLIC carries the AK's attributes: checked, so the hardware claim is made.
    assert ear(out)["ear_trustworthiness_vector"]["hardware"] == 2
    as_json = tmp_path / "pcrs.json"
    as_json.write_text(json.dumps(facts(t2)["pcrs"]))
    assert run(t2_args(t2, as_json, refvals), capsys)[0] == 0


def test_t2_relabelled_pcrs_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    t2 = vectors("tpm", T2)
    relabelled = t2 / "negative" / "pcrs_relabelled.json"
    code, out = run(t2_args(t2, relabelled, {}), capsys)
    submod = ear(out)
    assert code == 1 and submod["ear_status"] == "contraindicated"
    assert set(submod["ear_trustworthiness_vector"].values()) == {99}


def test_a_quote_that_signs_pcrs_needs_them(capsys: pytest.CaptureFixture[str]) -> None:
    t1 = vectors("tpm", T1)
    argv = t1_args(t1)
    del argv[argv.index("--pcrs") : argv.index("--pcrs") + 2]
    code, out, err = run_err(argv, capsys)
    assert (code, out) == (2, "") and "--pcrs" in err and "sha256:16" in err


# --- PSA tokens: RFC 9783 Appendix A --------------------------------------------------------


def p1_args(p1: Path, token: str = "psa-sign1.cbor", **changes: str) -> list[str]:
    (component,) = facts(p1)["psa-sign1.cbor"]["claims"]["2399"]
    args = {
        "--key": str(p1 / "tfm-es-iak.public.pem"),
        "--nonce": facts(p1)["nonce_hex"],
        "--expect-digest": f"{component['1']}={component['2']}",
        **changes,
    }
    return ["attest", "token", str(p1 / token), "--json", *(x for p in args.items() for x in p)]


@pytest.mark.parametrize(
    ("token", "key"),
    [("psa-sign1.cbor", "tfm-es-iak.public.pem"), ("psa-sign1.cbor", "tfm-es-iak.public.jwk"),
     ("psa-mac0.cbor", "hmac")],
)  # fmt: skip
def test_p1_with_its_nonce_and_digest_is_affirmed(
    token: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p1 = vectors("psa", P1)
    spec = f"hmac:{(p1 / 'tfm-hs-iak.key.bin').read_bytes().hex()}" if key == "hmac" else p1 / key
    code, out = run(p1_args(p1, token, **{"--key": str(spec)}), capsys)
    submod = ear(out)
    assert code == 0, submod
    assert submod["ear_status"] == "affirming" and submod["suitsrv.evidence"] == "psa-token"


@pytest.mark.parametrize(
    ("token", "change", "status"),
    [
        ("psa-sign1.cbor", {"--nonce": "02" * 32}, "contraindicated"),
        ("psa-sign1.cbor", {"--expect-digest": "PRoT=" + "00" * 32}, "contraindicated"),
        ("psa-sign1.cbor", {"--format": "eat"}, "contraindicated"),
        ("negative/psa-sign1.sigbitflip.cbor", {}, "contraindicated"),
        ("negative/psa-sign1.payload-nonce-changed.cbor", {}, "contraindicated"),
    ],
    ids=["wrong-nonce", "wrong-digest", "as-eat", "sigbitflip", "payload-nonce-changed"],
)
def test_p1_is_not_affirmed(
    token: str, change: dict[str, str], status: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(p1_args(vectors("psa", P1), token, **change), capsys)
    assert code == 1 and ear(out)["ear_status"] == status


def test_a_token_without_a_challenge_is_never_affirmed(capsys: pytest.CaptureFixture[str]) -> None:
    p1 = vectors("psa", P1)
    argv = p1_args(p1)
    del argv[argv.index("--nonce") : argv.index("--nonce") + 2]
    code, out = run(argv, capsys)
    submod = ear(out)
    assert code == 1 and submod["ear_status"] == "contraindicated"
    assert submod["suitsrv.reasons"][0].startswith("freshness not checked")
    assert "eat_nonce" not in submod
    # Everything else was checked: the vector is the affirming one.
    assert set(submod["ear_trustworthiness_vector"].values()) == {2}


# --- an EAT signed here, its key as a JWK file ----------------------------------------------


def test_eat_with_a_jwk_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nonce, image = b"\x5a" * 32, hashlib.sha256(b"firmware 1.0").digest()
    component = _cbor.dumps({1: ["firmware"], 2: [-16, image]})
    token = tmp_path / "eat.cbor"
    token.write_bytes(_cose.sign1(_cbor.dumps({10: nonce, 273: [[295, component]]}), ES256))
    jwk = tmp_path / "key.jwk"
    jwk.write_text(json.dumps(public_jwk(P256.public_key(), "k1")))
    base = ["attest", "token", str(token), "--key", str(jwk), "--nonce", nonce.hex(), "--json"]
    code, out = run([*base, "--expect-digest", f"firmware={image.hex()}"], capsys)
    assert code == 0 and ear(out)["suitsrv.evidence"] == "eat"
    code, out = run([*base, "--expect-digest", f"firmware={'11' * 32}"], capsys)
    assert code == 1 and ear(out)["ear_trustworthiness_vector"]["executables"] == 96
    code, out = run([*base, "--format", "psa"], capsys)
    assert code == 1 and set(ear(out)["ear_trustworthiness_vector"].values()) == {99}


# --- usage errors ---------------------------------------------------------------------------


@pytest.fixture
def dummy(tmp_path: Path) -> Path:
    """An RSA public key and placeholder evidence files: enough to reach argument checks."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "ak.pem").write_bytes(pem)
    for name in ("q.bin", "s.bin", "t.cbor"):
        (tmp_path / name).write_bytes(b"\x00" * 8)
    (tmp_path / "not-a-key").write_bytes(b"\x00\x01")
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        ["--ak", "missing.pem"],
        ["--ak", "not-a-key"],
        ["--nonce", "zz"],
        ["--nonce", ""],
        ["--nonce", "00" * 65],
        ["--expect", "sha256:16"],
        ["--expect", "md5:1=00"],
        ["--expect", "sha256:32=" + "00" * 32],
        ["--expect", "sha256:16=" + "00" * 20],
        ["--expect", "sha256:16=" + "00" * 32, "--expect", "sha256:16=" + "11" * 32],
        ["--expect", "sha256:16=" + "00" * 32, "--pcrs", "missing.bin"],
        ["--expect", "sha256:16=" + "00" * 32],  # golden values need --pcrs
        ["--event-log", "missing.log"],
        ["--signature", "missing.bin"],
    ],
)
def test_quote_usage_errors(
    argv: list[str], dummy: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(dummy)
    base = {"--ak": "ak.pem", "--attest": "q.bin", "--signature": "s.bin", "--nonce": "00" * 16}
    for flag in set(argv) & base.keys():
        del base[flag]
    argv = ["attest", "quote", *(x for p in base.items() for x in p), *argv]
    code, out, err = run_err(argv, capsys)
    assert (code, out) == (2, "") and "error:" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["missing.cbor", "--key", "ak.pem"],
        ["t.cbor"],  # --key is required
        ["t.cbor", "--key", "missing.pem"],
        ["t.cbor", "--key", "not-a-key"],
        ["t.cbor", "--key", "ak.pem"],  # RSA: not a COSE verification key here
        ["t.cbor", "--key", "hmac:zz"],
        ["t.cbor", "--key", "hmac:" + "00" * 16],  # shorter than any HMAC's hash output
        ["t.cbor", "--key", "hmac:" + "00" * 32, "--nonce", "xyz"],
        ["t.cbor", "--key", "hmac:" + "00" * 32, "--expect-digest", "PRoT"],
        ["t.cbor", "--key", "hmac:" + "00" * 32, "--expect-digest", "PRoT=0011"],
        ["t.cbor", "--key", "hmac:" + "00" * 32, "--format", "cwt"],
    ],
)
def test_token_usage_errors(
    argv: list[str], dummy: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(dummy)
    code, out, err = run_err(["attest", "token", *argv], capsys)
    assert (code, out) == (2, "") and "error:" in err


def test_usage_errors_name_the_problem(
    dummy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(dummy)
    argv = ["attest", "quote", "--ak", "ak.pem", "--attest", "q.bin", "--signature", "s.bin"]
    code, _, err = run_err([*argv, "--nonce", "00", "--expect", "sha256:16=00"], capsys)
    assert code == 2 and "--expect 'sha256:16=00'" in err
    code, _, err = run_err([*argv, "--nonce", "0g"], capsys)
    assert code == 2 and "--nonce: not hex" in err
    code, _, err = run_err(["attest", "token", "t.cbor", "--key", "not-a-key"], capsys)
    assert code == 2 and "not-a-key: not a PEM public key or a JWK" in err


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=300), name=st.sampled_from(["q.bin", "s.bin", "t.cbor"]))
def test_arbitrary_evidence_is_a_verdict(
    data: bytes, name: str, dummy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever the evidence bytes, the answer is a verdict (exit 1 with EAR claims), never a
    crash or a usage error."""
    (dummy / name).write_bytes(data)
    if name == "t.cbor":
        argv = ["attest", "token", str(dummy / name), "--key", "hmac:" + "00" * 32]
    else:
        argv = ["attest", "quote", "--ak", str(dummy / "ak.pem"),
                "--attest", str(dummy / "q.bin"), "--signature", str(dummy / "s.bin")]  # fmt: skip
    code, out = run([*argv, "--nonce", "01" * 32, "--json"], capsys)
    assert code == 1 and ear(out)["ear_status"] == "contraindicated"


# --- a live swtpm, quoted by tpm2-tools, appraised by the console script ---------------------

AK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)  # fmt: skip
AK_HANDLE = 0x81010002
FIRMWARE = b"thermostat firmware 2.0" * 100


@pytest.mark.parametrize("template", ["rsa2048:rsassa-sha256:null", "ecc256:ecdsa-sha256:null"])
def test_swtpm_quote_through_the_console_script(template: str, tmp_path: Path) -> None:
    image = hashlib.sha256(FIRMWARE).digest()
    with running_swtpm(tmp_path / "swtpm") as sw:
        with ESAPI(sw.tcti) as esapi:
            public_template = tss.TPM2B_PUBLIC(tss.TPMT_PUBLIC.parse(template, AK_ATTRS))
            handle, public = esapi.create_primary(None, public_template, ESYS_TR.ENDORSEMENT)[:2]
            # Persisted so tpm2-tools can use it; written as tpm2_createak -u writes it.
            esapi.evict_control(ESYS_TR.OWNER, handle, AK_HANDLE)
            esapi.flush_context(handle)
            (tmp_path / "ak.tpm2b_public").write_bytes(public.marshal())
            esapi.pcr_reset(ESYS_TR.PCR16)
            digest = tss.TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=tss.TPMU_HA(sha256=image))
            esapi.pcr_extend(ESYS_TR.PCR16, tss.TPML_DIGEST_VALUES([digest]))
        nonce = hashlib.sha256(tmp_path.name.encode()).digest()[:20]
        subprocess.run(
            ["tpm2_quote", "-T", sw.tcti, "-c", hex(AK_HANDLE), "-l", "sha256:16",
             "-q", nonce.hex(), "-g", "sha256", "-m", str(tmp_path / "quote.tpms_attest"),
             "-s", str(tmp_path / "quote.tpmt_signature"), "-o", str(tmp_path / "pcrs.bin")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    pcr16 = hashlib.sha256(bytes(32) + image).hexdigest()
    suitsrv = Path(sys.executable).with_name("suitsrv")

    def appraise(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(suitsrv), "attest", "quote", "--ak", str(tmp_path / "ak.tpm2b_public"),
             "--attest", str(tmp_path / "quote.tpms_attest"),
             "--signature", str(tmp_path / "quote.tpmt_signature"),
             "--pcrs", str(tmp_path / "pcrs.bin"), "--json", *extra],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip

    good = appraise("--nonce", nonce.hex(), "--expect", f"sha256:16={pcr16}")
    assert good.returncode == 0, good.stdout + good.stderr
    assert ear(good.stdout)["ear_trustworthiness_vector"] == {
        "instance-identity": 2, "executables": 2, "hardware": 2
    }  # fmt: skip
    tampered = appraise("--nonce", nonce.hex(), "--expect", f"sha256:16={'00' * 32}")
    assert tampered.returncode == 1 and ear(tampered.stdout)["ear_status"] == "contraindicated"
    replayed = appraise("--nonce", "00" * 20, "--expect", f"sha256:16={pcr16}")
    assert replayed.returncode == 1 and "not fresh" in replayed.stdout
    # The compact event log our devices keep must replay to the quoted PCR 16.
    for name, digest in {"good.log": image, "lying.log": bytes(32)}.items():
        event = Event(16, None, {TpmAlg.SHA256: digest}, b"", (b"firmware",), None, 1)
        (tmp_path / name).write_bytes(encode_compact_log([event]))
    logged = appraise("--nonce", nonce.hex(), "--expect", f"sha256:16={pcr16}",
                      "--event-log", str(tmp_path / "good.log"))  # fmt: skip
    assert logged.returncode == 0, logged.stdout
    lying = appraise("--nonce", nonce.hex(), "--expect", f"sha256:16={pcr16}",
                     "--event-log", str(tmp_path / "lying.log"))  # fmt: skip
    assert lying.returncode == 1 and "event log" in lying.stdout
    usage = appraise("--nonce", nonce.hex(), "--expect", "sha256:16")
    assert (usage.returncode, usage.stdout) == (2, "") and "--expect" in usage.stderr
