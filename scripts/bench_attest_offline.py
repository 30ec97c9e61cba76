"""The attest suite offline, in this process on one core: attest.appraise_tpm and
attest.verify_quote against cryptography's bare verify of the same signatures, and bytes to
verdict against Keylime's ``tpm_util.checkquote`` in a worker process, in interleaved rounds."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.util
import inspect
import itertools
import json
import os
import selectors
import statistics
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import bench_common
import cryptography
from bench_common import Report, Sample
from bench_swtpm import IMAGES, MANIFEST_DIGEST, PCR, Quoted
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from attest.appraise import ExpectedImage, Policy, ReferenceValues, appraise_tpm
from attest.ear_claims import Status
from attest.quote import parse_pcr_file, verify_quote
from attest.tpm import TpmAlg, parse_public

T = TypeVar("T")
Op = Callable[[], object]
Rate = Callable[[Op, float], float]  # bench._rate: operations per second of op over ~seconds
Side = Callable[[float], float]  # one round of one side: seconds -> operations per second
RAW = {
    "ECC P-256": "cryptography ECDSA P-256 verify (DER sig, prehashed SHA-256 of TPMS_ATTEST)",
    "RSA-2048": "cryptography RSASSA-PKCS1v15 RSA-2048 verify (prehashed SHA-256 of TPMS_ATTEST)",
}
KEYLIME = "keylime==7.14.3"
KEYLIME_VENV = "BENCH_KEYLIME_VENV"
KEYLIME_NAME = "Keylime tpm_util.checkquote (PEM AK, tpm2-tools PCR file), same quotes"
REFERENCE = ReferenceValues(
    tuple(ExpectedImage((c,), (("sha256", hashlib.sha256(i).digest()),)) for c, i in IMAGES),
    manifest_digest=MANIFEST_DIGEST,
)


def _cycling(items: Sequence[T], fn: Callable[[T], object]) -> Op:
    """An op applying ``fn`` to the next of ``items``, round robin (the same cost both sides)."""
    it = itertools.cycle(items)
    return lambda: fn(next(it))


def _local(rate: Rate, op: Op) -> Side:
    def side(seconds: float) -> float:
        gc.collect()
        return rate(op, seconds)

    return side


def _interleave(ours: Side, theirs: Side, rounds: int, seconds: float) -> tuple[float, float]:
    """Median rate of each side over ``rounds`` rounds, which side goes first alternating."""
    for side in (ours, theirs):  # warm up caches, the allocator and lazy imports
        side(min(0.2, seconds))
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        order = [(ours, a), (theirs, b)]
        for side, rates in order if i % 2 == 0 else order[::-1]:
            rates.append(side(seconds))
    return statistics.median(a), statistics.median(b)


def _raw(q: Quoted) -> Op:
    """cryptography's verify of each TPMT_SIGNATURE (decoded here, not by attest) over the
    prehashed SHA-256 of its TPMS_ATTEST: the floor under any quote check."""
    key = q.ak.key
    items = []
    for attest, signature, _ in q.quotes:
        # TPMT_SIGNATURE: sigAlg u16, hashAlg u16, then RSA: TPM2B sig; ECDSA: TPM2B r, TPM2B s.
        (size,) = struct.unpack_from(">H", signature, 4)
        sig = signature[6 : 6 + size]
        if isinstance(key, ec.EllipticCurvePublicKey):
            (s_size,) = struct.unpack_from(">H", signature, 6 + size)
            s = signature[8 + size : 8 + size + s_size]
            sig = encode_dss_signature(int.from_bytes(sig), int.from_bytes(s))
        items.append((sig, hashlib.sha256(attest).digest()))
    if isinstance(key, ec.EllipticCurvePublicKey):
        ecdsa = ec.ECDSA(Prehashed(hashes.SHA256()))

        def check(item: tuple[bytes, bytes]) -> None:
            key.verify(item[0], item[1], ecdsa)

    elif isinstance(key, rsa.RSAPublicKey):
        pkcs1, prehashed = padding.PKCS1v15(), Prehashed(hashes.SHA256())

        def check(item: tuple[bytes, bytes]) -> None:
            key.verify(item[0], item[1], pkcs1, prehashed)

    else:
        raise RuntimeError(f"unexpected AK type {type(key)}")
    for item in items:  # raises InvalidSignature if these are not the bytes the TPM signed
        check(item)
    return _cycling(items, check)


# The swtpm's images sit in PCR 16, which software can reset: under the product policy they
# only warn (ADR 0006); the suite times the path that affirms, as a real boot PCR would.
SIMULATION = Policy(allow_resettable_pcrs=True)


def _appraise(q: Quoted, from_bytes: bool = False) -> Op:
    """appraise_tpm on each quote; ``from_bytes`` also parses what Keylime's checkquote is
    given as bytes: the AK (TPM2B_PUBLIC, where Keylime takes PEM) and the PCR file."""

    def run(quote: tuple[bytes, bytes, str]) -> Status:
        ak = parse_public(q.ak_tpm2b) if from_bytes else q.ak
        pcrs = parse_pcr_file(q.pcr_file) if from_bytes else q.pcrs
        verdict = appraise_tpm(quote[0], quote[1], ak, nonce=quote[2].encode(), pcrs=pcrs,
                               event_log=q.log, reference=REFERENCE,
                               previous=q.previous, policy=SIMULATION)  # fmt: skip
        return verdict.status

    if parse_pcr_file(q.pcr_file) != q.pcrs:
        raise RuntimeError("the PCR file does not hold the PCR values read from the TPM")
    for quote in q.quotes:  # a benchmark of a failing path would mean nothing
        if (status := run(quote)) is not Status.AFFIRMING:
            raise RuntimeError(f"a {q.kind} quote was appraised {status}, not affirming")
    return _cycling(q.quotes, run)


def _verify(q: Quoted, from_bytes: bool = False) -> Op:
    def run(quote: tuple[bytes, bytes, str]) -> object:
        ak = parse_public(q.ak_tpm2b) if from_bytes else q.ak
        pcrs = parse_pcr_file(q.pcr_file) if from_bytes else q.pcrs
        return verify_quote(quote[0], quote[1], ak, nonce=quote[2].encode(), pcrs=pcrs,
                            previous=q.previous)  # fmt: skip

    for quote in q.quotes:
        run(quote)
    return _cycling(q.quotes, run)


# Keylime's checkquote in a worker process. The timing loop is bench._rate's source, pasted in, so
# both sides of the comparison are timed by the same code.
_KEYLIME_WORKER = """
from __future__ import annotations

import gc
import json
import sys
import time

from keylime.tpm import tpm_util

%(rate)s

with open(sys.argv[1]) as fh:
    spec = json.load(fh)
ak_pem, pcr_file = spec["ak_pem"].encode(), bytes.fromhex(spec["pcr_file"])
quotes = [(n, bytes.fromhex(s), bytes.fromhex(a)) for a, s, n in spec["quotes"]]
for nonce, sig, attest in quotes:  # a benchmark of a failing path would mean nothing
    pcrs = tpm_util.checkquote(ak_pem, nonce, sig, attest, pcr_file, "sha256")
    if {int(k): v for k, v in pcrs.items()} != {%(pcr)d: spec["pcr"]}:
        sys.exit(f"checkquote returned {pcrs!r}")
index = 0


def op():
    global index
    nonce, sig, attest = quotes[index %% len(quotes)]
    index += 1
    return tpm_util.checkquote(ak_pem, nonce, sig, attest, pcr_file, "sha256")


print("ready", flush=True)
for line in sys.stdin:
    gc.collect()
    print(_rate(op, float(line)), flush=True)
"""


class KeylimeWorker:
    """A Keylime venv's python running _KEYLIME_WORKER on one AK's quotes, pinned to CPU 0."""

    def __init__(self, python: str, q: Quoted, work: Path, rate: Rate) -> None:
        slug = q.kind.replace(" ", "").lower()
        script, spec = work / "keylime_worker.py", work / f"keylime-{slug}.json"
        script.write_text(_KEYLIME_WORKER % {"rate": inspect.getsource(rate), "pcr": PCR})
        pem = q.ak.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        spec.write_text(json.dumps({
            "ak_pem": pem.decode(), "pcr_file": q.pcr_file.hex(),
            "pcr": q.pcrs.banks[TpmAlg.SHA256][PCR].hex(),
            "quotes": [(a.hex(), s.hex(), n) for a, s, n in q.quotes],
        }))  # fmt: skip
        self.log = work / f"keylime-{slug}.log"
        with self.log.open("ab") as err:  # Keylime warns on stderr about its missing config
            self.proc = subprocess.Popen(
                bench_common._pinned([python, str(script), str(spec)], 0), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True,
            )  # fmt: skip
        try:
            if self._line(60) != "ready":
                raise RuntimeError(f"the Keylime worker did not start:\n{self.log.read_text()}")
        except BaseException:
            self.close()
            raise

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"the Keylime worker said nothing in {timeout:g} s")
        return self.proc.stdout.readline().strip()

    def rate(self, seconds: float) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()
        return float(self._line(seconds * 5 + 30))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # end of input: the worker's loop ends
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def keylime_python() -> tuple[str | None, str]:
    """(the python of a venv where Keylime imports, what it runs) or (None, why not): this
    interpreter's when Keylime is installed beside us, else the venv BENCH_KEYLIME_VENV names,
    by default ``suitsrv-bench-keylime`` under the temporary directory. A venv under the
    temporary directory that does not exist yet is created with Keylime from PyPI (never in the
    repository's venv: Keylime's wheel pins nothing, so it stays apart), each step bounded in
    time; without PyPI the figure is skipped with a note."""
    venv = os.environ.get(KEYLIME_VENV)
    if not venv and importlib.util.find_spec("keylime") is None:
        venv = str(Path(tempfile.gettempdir()) / "suitsrv-bench-keylime")
    python = Path(venv) / "bin" / "python" if venv else Path(sys.executable)
    if venv and not python.exists():
        tmp = Path(tempfile.gettempdir()).resolve()
        if not Path(venv).resolve().is_relative_to(tmp):
            return None, f"{venv} has no bin/python (only a venv under {tmp} is created here)"
        print(f"  creating {venv} with {KEYLIME}", file=sys.stderr)
        # Keylime's wheel declares no dependencies; checkquote needs cryptography (ours, so both
        # sides call the same OpenSSL) and PyYAML for its config module.
        steps = [[sys.executable, "-m", "venv", venv],
                 [str(python), "-m", "pip", "install", "-q", KEYLIME,
                  f"cryptography=={cryptography.__version__}", "pyyaml"]]  # fmt: skip
        try:
            for step in steps:
                subprocess.run(step, check=True, timeout=300, capture_output=True)
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"installing {KEYLIME} into {venv} failed: {exc}"
    probe = (
        "import importlib.metadata as m, cryptography; from keylime.tpm import tpm_util; "
        "from cryptography.hazmat.backends.openssl.backend import backend as b; "
        "print(f\"keylime {m.version('keylime')}, cryptography {cryptography.__version__}, "
        '{b.openssl_version_text()}")'
    )
    try:
        done = subprocess.run(
            [str(python), "-c", probe], check=False, capture_output=True, text=True, timeout=60
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"{python} does not run: {exc}"
    if done.returncode != 0:
        return None, f"keylime does not import in {python}: {done.stderr.strip()[-300:]}"
    return str(python), done.stdout.strip()


def offline(
    quoted: list[Quoted], rounds: int, seconds: float, rate: Rate, work: Path, report: Report
) -> None:
    appraise = "attest.appraise_tpm (quote, compact log replay, 2 reference images)"
    verify = "attest.verify_quote (signature, nonce, PCR digest, clock)"
    for q in quoted:
        print(f"  {q.kind}: {len(q.quotes)} quotes in rotation", file=sys.stderr)
        raw = _local(rate, _raw(q))
        for name, op, target in ((appraise, _appraise(q), ">=0.8"), (verify, _verify(q), "")):
            value, base = _interleave(_local(rate, op), raw, rounds, seconds)
            print(f"    {name}: {value:,.0f}/s vs {base:,.0f}/s", file=sys.stderr)
            sample = Sample(f"{name}, {q.kind}", value, "ops/s", RAW[q.kind], base, target or None)
            report.samples.append(sample)
    python, what = keylime_python()
    if python is None:
        report.notes.append(f"keylime not installed: baseline skipped ({what})")
        return
    where = f"{KEYLIME_VENV}={Path(python).parent.parent}" if python != sys.executable else "here"
    report.method.append(f"Keylime ({where}): {what}; a worker process on CPU 0")
    for q in quoted:
        worker = KeylimeWorker(python, q, work, rate)
        try:
            for name, op, target in (
                ("parse_public + parse_pcr_file + appraise_tpm", _appraise(q, True), ">=1.2"),
                ("parse_public + parse_pcr_file + verify_quote", _verify(q, True), ""),
            ):
                value, base = _interleave(_local(rate, op), worker.rate, rounds, seconds)
                print(f"    {name} vs Keylime: {value:,.0f}/s vs {base:,.0f}/s", file=sys.stderr)
                sample = Sample(f"bytes to verdict: {name}, {q.kind}", value, "ops/s",
                                KEYLIME_NAME, base, target or None)  # fmt: skip
                report.samples.append(sample)
        finally:
            worker.close()
