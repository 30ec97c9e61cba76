"""The ``attest`` suite: TPM quote appraisal on one core, offline and over HTTP, on real quotes.

A real swtpm (through tpm2-pytss, run as tests/swtpm.py runs it) measures two images into PCR 16
the way our devices do (extends plus a compact event log), then quotes a handful of nonces with
an ECC P-256 AK and an RSA-2048 AK, restricted signing keys under the endorsement hierarchy.

Offline, in this process on one core, interleaved rounds time ``attest.appraise_tpm`` (the quote
appraisal: signature, nonce, PCR digest, clock, log replay, reference images) and
``attest.verify_quote`` against cryptography's bare verify of the same signatures over the same
bytes; and, when Keylime is installed here or in the venv ``BENCH_KEYLIME_VENV`` names, bytes
to verdict against Keylime's ``tpm_util.checkquote`` on the same quotes, in a worker process
(of that venv) on the same core. Over HTTP, ``suitsrv serve`` on a fresh data directory (on
its own core) answers challenge + evidence from devices whose agent quotes each server-issued
nonce on the swtpm (client and swtpm on the other core), against bench_service's bare aiohttp
JSON route driven by the same aiohttp client. Nothing asserts a time (STYLE.md: benchmarks are
not tests).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import importlib.util
import inspect
import itertools
import json
import os
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import bench_service
import cryptography
from bench_service import GENERATOR_CPU, SERVER_CPU, Load, Report, Sample, Server
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from tpm2_pytss import ESAPI
from tpm2_pytss import types as tss
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT

from attest.appraise import ExpectedImage, ReferenceValues, appraise_tpm
from attest.ear import verify_ear_jwt
from attest.ear_claims import Status
from attest.eventlog import Event, encode_compact_log
from attest.keys import key_from_jwk
from attest.quote import PcrValues, parse_pcr_file, verify_quote
from attest.tpm import ClockInfo, PublicKey, TpmAlg, parse_attest, parse_public
from manifests import (
    Algorithm,
    SigningKey,
    build_manifest,
    build_report,
    generate_signing_key,
    load_spec,
    parse_envelope,
    public_pem,
    sign,
)
from manifests.report import ReportResult
from suitsrv import accounts
from suitsrv.store import Role, SqliteStore

T = TypeVar("T")
Op = Callable[[], object]
Rate = Callable[[Op, float], float]  # bench._rate: operations per second of op over ~seconds
Side = Callable[[float], float]  # one round of one side: seconds -> operations per second

PINNED = (
    f"offline: CPU 0 (the Keylime worker too); HTTP: servers on CPU {SERVER_CPU}, "
    f"client and swtpm on CPU {GENERATOR_CPU}"
)
KEYLIME = "keylime==7.14.3"
KEYLIME_VENV = "BENCH_KEYLIME_VENV"
AK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)  # fmt: skip
AK_TEMPLATES = {"ECC P-256": "ecc256:ecdsa-sha256:null", "RSA-2048": "rsa2048:rsassa-sha256:null"}
RAW = {
    "ECC P-256": "cryptography ECDSA P-256 verify (DER sig, prehashed SHA-256 of TPMS_ATTEST)",
    "RSA-2048": "cryptography RSASSA-PKCS1v15 RSA-2048 verify (prehashed SHA-256 of TPMS_ATTEST)",
}
KEYLIME_NAME = "Keylime tpm_util.checkquote (PEM AK, tpm2-tools PCR file), same quotes"
PCR = 16
# Offline: a bootloader and a firmware image measured into PCR 16 (tests/test_appraise.py).
IMAGES = ((b"bootloader", b"bootloader 7" * 50), (b"firmware", b"thermostat firmware 1.2.0" * 100))
MANIFEST_DIGEST = hashlib.sha256(b"the manifest").digest()
REFERENCE = ReferenceValues(
    tuple(ExpectedImage((c,), (("sha256", hashlib.sha256(i).digest()),)) for c, i in IMAGES),
    manifest_digest=MANIFEST_DIGEST,
)
# HTTP: one release of one image, published, which every device reports installing.
HTTP_FIRMWARE = b"thermostat firmware 1.5.0 " * 400
CLASS_NAME = "thermostat-v2"


@dataclass(frozen=True)
class Plan:
    quotes: int  # per AK, timed offline in rotation
    http_rounds: int
    http_seconds: int  # whole seconds, as bench_service's generators take them
    unloaded_seconds: int
    devices: int  # concurrent device loops when saturated, one connection each


FULL = Plan(quotes=8, http_rounds=3, http_seconds=5, unloaded_seconds=2, devices=32)
QUICK = Plan(quotes=8, http_rounds=2, http_seconds=2, unloaded_seconds=1, devices=32)


# -- the device side: swtpm, AKs, measurements, quotes --------------------------------------------


def _free_port_pair() -> int:
    """A port p such that p and p+1 were both free a moment ago (swtpm server + control)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for swtpm")


class Swtpm:
    """A swtpm on loopback, pinned to the generator core, with one ESAPI connection; stopped
    (SIGTERM, then SIGKILL) on exit. The TPM is outside the product, as on a device."""

    def __init__(self, state: Path, log: Path) -> None:
        exe = shutil.which("swtpm")
        if exe is None:
            raise RuntimeError("swtpm is not installed: run scripts/setup (as root)")
        state.mkdir(parents=True, exist_ok=True)
        port = _free_port_pair()
        argv = [exe, "socket", "--tpm2", "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                "--tpmstate", f"dir={state}", "--flags", "not-need-init,startup-clear"]  # fmt: skip
        self.esapi: ESAPI | None = None
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                bench_service._pinned(argv, GENERATOR_CPU), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        tail = log.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"swtpm did not start:\n{tail}") from None
                    time.sleep(0.02)
            self.esapi = ESAPI(f"swtpm:host=127.0.0.1,port={port}")
        except BaseException:
            self.stop()
            raise

    @property
    def tpm(self) -> ESAPI:
        if self.esapi is None:
            raise RuntimeError("the swtpm is stopped")
        return self.esapi

    def cpu_seconds(self) -> float:
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def create_ak(self, template: str) -> tuple[Any, bytes]:
        """A restricted signing key under the endorsement hierarchy: (handle, TPM2B_PUBLIC)."""
        public = tss.TPM2B_PUBLIC(tss.TPMT_PUBLIC.parse(template, AK_ATTRS))
        handle, created = self.tpm.create_primary(None, public, ESYS_TR.ENDORSEMENT)[:2]
        return handle, bytes(created.marshal())

    def measure(self, images: Sequence[tuple[bytes, bytes]], manifest: bytes | None) -> bytes:
        """Extend each image's SHA-256 into PCR 16 from reset; return the compact event log."""
        self.tpm.pcr_reset(ESYS_TR.PCR16)
        events = []
        for component, image in images:
            digest = hashlib.sha256(image).digest()
            value = tss.TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=tss.TPMU_HA(sha256=digest))
            self.tpm.pcr_extend(ESYS_TR.PCR16, tss.TPML_DIGEST_VALUES([value]))
            events.append(Event(PCR, None, {TpmAlg.SHA256: digest}, b"", (component,), manifest))
        return encode_compact_log(events)

    def pcr16(self) -> bytes:
        # Keep the result alive while reading it: tpm2-pytss frees C memory with the object.
        result = self.tpm.pcr_read(f"sha256:{PCR}")
        return bytes(result[2].digests[0])

    def quote(self, handle: Any, nonce: bytes) -> tuple[bytes, bytes]:
        """(TPMS_ATTEST, TPMT_SIGNATURE) of a quote of PCR 16 over ``nonce``."""
        attest, signature = self.tpm.quote(handle, f"sha256:{PCR}", nonce)
        return bytes(attest), bytes(signature.marshal())

    def __enter__(self) -> Swtpm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.esapi is not None:
            with contextlib.suppress(Exception):
                self.esapi.close()
            self.esapi = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@dataclass(frozen=True)
class Quoted:
    """A handful of quotes from one AK, with what a verifier receives alongside them."""

    kind: str  # a key of AK_TEMPLATES
    ak_tpm2b: bytes
    ak: PublicKey
    quotes: tuple[tuple[bytes, bytes, str], ...]  # (TPMS_ATTEST, TPMT_SIGNATURE, ASCII nonce)
    previous: ClockInfo  # of a quote made just before these, as the service would hold it
    pcrs: PcrValues
    pcr_file: bytes  # the same values in tpm2-tools' `tpm2_quote -o` layout
    log: bytes


def _pcr_file(value: bytes) -> bytes:
    """tpm2-tools' PCR file for SHA-256 PCR 16 (vectors/attest/README.md, and above
    attest.quote.parse_pcr_file): a little-endian in-memory TPML_PCR_SELECTION of 16 slots
    {u16 hash, u8 sizeofSelect, 4 select bytes, pad}, then u32 n and n TPML_DIGEST
    {u32 count, 8 x {u16 size, 64-byte buffer}}."""
    bitmap = bytearray(4)
    bitmap[PCR // 8] |= 1 << (PCR % 8)
    selection = struct.pack("<I", 1) + struct.pack("<HB4sx", TpmAlg.SHA256, 3, bytes(bitmap))
    digests = struct.pack("<II", 1, 1) + struct.pack("<H64s", len(value), value)
    return selection + bytes(8 * 15) + digests + bytes(66 * 7)


def make_quotes(tpm: Swtpm, count: int) -> list[Quoted]:
    log = tpm.measure(IMAGES, MANIFEST_DIGEST)
    pcr16 = tpm.pcr16()
    pcrs = PcrValues({TpmAlg.SHA256: {PCR: pcr16}})
    out = []
    for kind, template in AK_TEMPLATES.items():
        handle, tpm2b = tpm.create_ak(template)
        try:
            first, _ = tpm.quote(handle, b"previous")
            # The TPM clock counts milliseconds: a quote in the same one as `previous` would be
            # refused (rightly) as a replay, and a refused quote is not what is to be timed.
            time.sleep(0.01)
            # Keylime's agents quote 20-character ASCII nonces; ours are bytes, so both fit.
            nonces = [base64.urlsafe_b64encode(os.urandom(15)).decode() for _ in range(count)]
            quotes = tuple((*tpm.quote(handle, n.encode()), n) for n in nonces)
        finally:
            tpm.tpm.flush_context(handle)
        out.append(Quoted(kind, tpm2b, parse_public(tpm2b), quotes,
                          parse_attest(first).clock_info, pcrs, _pcr_file(pcr16), log))  # fmt: skip
    return out


# -- offline: rates in interleaved rounds ---------------------------------------------------------


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


def _appraise(q: Quoted, from_bytes: bool = False) -> Op:
    """appraise_tpm on each quote; ``from_bytes`` also parses what Keylime's checkquote is
    given as bytes: the AK (TPM2B_PUBLIC, where Keylime takes PEM) and the PCR file."""

    def run(quote: tuple[bytes, bytes, str]) -> Status:
        ak = parse_public(q.ak_tpm2b) if from_bytes else q.ak
        pcrs = parse_pcr_file(q.pcr_file) if from_bytes else q.pcrs
        verdict = appraise_tpm(quote[0], quote[1], ak, nonce=quote[2].encode(), pcrs=pcrs,
                               event_log=q.log, reference=REFERENCE,
                               previous=q.previous)  # fmt: skip
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
                bench_service._pinned([python, str(script), str(spec)], 0), stdin=subprocess.PIPE,
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
    interpreter's when Keylime is installed beside us (an optional bench extra), else the venv
    BENCH_KEYLIME_VENV names; one under the temporary directory that does not exist yet is
    created with Keylime (never in the repository's venv), each step bounded in time."""
    venv = os.environ.get(KEYLIME_VENV)
    if not venv and importlib.util.find_spec("keylime") is None:
        return None, f"not importable here and {KEYLIME_VENV} is not set"
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


# -- HTTP: challenge + evidence against a bare JSON route -----------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def _seed(data_dir: Path, ak: bytes, devices: int) -> tuple[str, list[str], SigningKey]:
    """A vendor with an ES256 anchor and a token, and ``devices`` devices enrolled with the AK
    (one swtpm, so one AK for all; the server parses a device's AK per request all the same)."""
    now, vendor = time.time(), bench_service.VENDOR
    key = generate_signing_key(Algorithm.ES256)
    store = SqliteStore(data_dir)
    try:
        await accounts.add_vendor(store, vendor, vendor_domains=[bench_service.DOMAIN],
                                  anchors=[{"pem": public_pem(key).decode()}], now=now)  # fmt: skip
        token, _ = await accounts.issue_credential(store, Role.VENDOR, vendor, now=now)
        keys = {"ak_public": base64.b64encode(ak).decode()}
        devices_ = [
            await accounts.register_device(store, f"tpm-{i:03d}", vendor, class_name=CLASS_NAME,
                                           keys=keys, now=now)
            for i in range(devices)
        ]  # fmt: skip
    finally:
        store.close()
    return token, [t for _, t in devices_], key


async def _publish(url: str, vendor: str, key: SigningKey, devices: list[str]) -> str:
    """The payload and a signed manifest naming it over the vendor API, then a success report
    from every device, so the server has reference values; returns the manifest digest."""
    sha = hashlib.sha256(HTTP_FIRMWARE).hexdigest()
    spec = f"""
vendor-domain = "{bench_service.DOMAIN}"
class-name = "{CLASS_NAME}"
sequence-number = 4
version = "1.4.0"
[[component]]
id = ["firmware"]
digest = "{sha}"
size = {len(HTTP_FIRMWARE)}
uri = "https://updates.example/v1/payloads/{sha}"
"""
    envelope = sign(build_manifest(load_spec(spec)), [key])
    digest = parse_envelope(envelope).digest
    report = build_report(reference_uri="", manifest_digest=digest,
                          result=ReportResult(success=True))  # fmt: skip
    posts = [(f"/v1/vendor/payloads/{sha}", vendor, HTTP_FIRMWARE, "application/octet-stream"),
             ("/v1/vendor/manifests", vendor, envelope, "application/suit-envelope+cose"),
             *(("/v1/device/reports", t, report, "application/suit-report+cose")
               for t in devices)]  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for path, token, body, kind in posts:
            method = "PUT" if path.startswith("/v1/vendor/payloads/") else "POST"
            if path == "/v1/device/reports":  # a device reports what its update poll handed it
                auth = {"Authorization": f"Bearer {token}"}
                async with session.get(url + "/v1/device/update", headers=auth) as poll:
                    if poll.status != 200:
                        raise RuntimeError(f"poll: {poll.status} {await poll.text()}")
            headers = {"Authorization": f"Bearer {token}", "Content-Type": kind}
            async with session.request(method, url + path, data=body, headers=headers) as resp:
                if resp.status not in (200, 201):
                    raise RuntimeError(f"{method} {path}: {resp.status} {await resp.text()}")
    return digest.hex


class Agent:
    """The device side of one challenge: quote the nonce on the swtpm, build the evidence."""

    def __init__(self, tpm: Swtpm, handle: Any, log: bytes, pcr16: bytes) -> None:
        self.tpm, self.handle, self.log = tpm, handle, _b64(log)
        self.pcrs = {"sha256": {str(PCR): pcr16.hex()}}

    def evidence(self, nonce: str) -> bytes:
        attest, signature = self.tpm.quote(self.handle, _unb64(nonce))
        return json.dumps({
            "format": "tpm2-quote", "nonce": nonce, "quote": _b64(attest),
            "signature": _b64(signature), "pcrs": self.pcrs, "event_log": self.log,
        }).encode()  # fmt: skip


@dataclass
class Tally:
    """What one run of device loops saw, in seconds (Load keeps only the evidence request's)."""

    evidence: list[float] = field(default_factory=list)
    challenge: list[float] = field(default_factory=list)
    quote: list[float] = field(default_factory=list)  # client side: the swtpm and its queue
    failed: list[str] = field(default_factory=list)


async def _device_loops(
    url: str, tokens: list[str], seconds: int, agent: Agent, tpm: ThreadPoolExecutor
) -> tuple[Tally, float]:
    """Each token is a device looping challenge → quote → evidence until the deadline; an
    attestation counts when its evidence is answered 200 and affirming."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=len(tokens))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        deadline = loop.time() + seconds

        async def device(token: str) -> None:
            auth = {"Authorization": f"Bearer {token}"}
            as_json = {**auth, "Content-Type": "application/json"}
            while loop.time() < deadline:
                t0 = time.perf_counter()
                try:
                    async with session.post(f"{url}/v1/device/attestation/challenge",
                                            headers=auth) as resp:  # fmt: skip
                        if resp.status != 201:
                            raise RuntimeError(f"challenge answered {resp.status}")
                        nonce = (await resp.json())["nonce"]
                    t1 = time.perf_counter()
                    body = await loop.run_in_executor(tpm, agent.evidence, nonce)
                    t2 = time.perf_counter()
                    async with session.post(f"{url}/v1/device/attestation/evidence", data=body,
                                            headers=as_json) as resp:  # fmt: skip
                        answer, status = await resp.read(), resp.status
                    t3 = time.perf_counter()
                except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                    tally.failed.append(repr(exc))
                    continue
                verdict = json.loads(answer) if status == 200 else {}
                if verdict.get("status") != "affirming":
                    tally.failed.append(f"{status} {verdict.get('reasons') or answer[:200]!r}")
                    continue
                tally.challenge.append(t1 - t0)
                tally.quote.append(t2 - t1)
                tally.evidence.append(t3 - t2)

        start = time.perf_counter()
        await asyncio.gather(*(device(t) for t in tokens))
        return tally, time.perf_counter() - start


def _ms(values: list[float], p: float) -> float:
    return bench_service._percentile(sorted(values), p) * 1e3


@dataclass
class Candidate:
    """The attesting devices as a bench_service measure; keeps what Load has no room for."""

    url: str
    agent: Agent
    tpm: Swtpm
    executor: ThreadPoolExecutor
    extra: list[tuple[float, float, float]] = field(default_factory=list)  # per run
    failed: list[str] = field(default_factory=list)

    def run(self, tokens: list[str], seconds: int) -> Load:
        cpu, swtpm, start = time.process_time(), self.tpm.cpu_seconds(), time.perf_counter()
        tally, elapsed = asyncio.run(
            _device_loops(self.url, tokens, seconds, self.agent, self.executor)
        )
        wall = time.perf_counter() - start
        if not tally.evidence:
            raise RuntimeError(f"no attestation was affirmed: {tally.failed[:3]}")
        self.failed += tally.failed
        swtpm_cores = (self.tpm.cpu_seconds() - swtpm) / wall
        self.extra.append((_ms(tally.challenge, 50), _ms(tally.quote, 50), swtpm_cores))
        return Load(len(tally.evidence), elapsed, len(tally.failed), _ms(tally.evidence, 50),
                    _ms(tally.evidence, 95), _ms(tally.evidence, 99),
                    (time.process_time() - cpu) / wall)  # fmt: skip


async def _check(ours: Server, bare: Server, token: str, agent: Agent) -> int:
    """One attestation end to end, its EAR verified with the published JWKS (a fast wrong answer
    means nothing), and the bare route's JSON; returns the EAR's length."""
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        url = f"{ours.url}/v1/device/attestation/challenge"
        async with session.post(url, headers=auth) as resp:
            nonce = (await resp.json())["nonce"]
        url = f"{ours.url}/v1/device/attestation/evidence"
        headers = {**auth, "Content-Type": "application/json"}
        async with session.post(url, data=agent.evidence(nonce), headers=headers) as resp:
            verdict = await resp.json()
        if verdict.get("status") != "affirming":
            raise RuntimeError(f"the first attestation was not affirmed: {verdict}")
        async with session.get(f"{ours.url}/.well-known/jwks.json") as resp:
            key = key_from_jwk((await resp.json())["keys"][0], name="suitsrv")
        now, nonce_bytes = int(time.time()), _unb64(nonce)
        ear = verify_ear_jwt(verdict["ear"], key, now=now, expected_nonce=nonce_bytes)
        (submod,) = ear.submods.values()
        if submod.status is not Status.AFFIRMING or submod.vector.executables != 2:
            raise RuntimeError(f"the EAR does not affirm the firmware: {submod}")
        async with session.get(f"{bare.url}/json") as resp:
            if resp.status != 200 or await resp.json() != bench_service.BASELINE_JSON:
                raise RuntimeError(f"the bare JSON route answered {resp.status}")
    return len(verdict["ear"])


def _serve(data_dir: Path, work: Path) -> Server:
    """``suitsrv serve`` as bench_service.candidate starts it, with the access log turned off in
    a config file: ``--data-dir`` alone makes serve read no SUITSRV_* variable but that one, so
    the SUITSRV_ACCESS_LOG=0 that bench_service.Server sets is lost."""
    config = work / "suitsrv.toml"
    config.write_text(f"data-dir = {json.dumps(str(data_dir))}\naccess-log = false\n")
    port = bench_service._free_port()
    argv = [str(Path(sys.executable).with_name("suitsrv")), "serve", "--config", str(config),
            "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    return Server("suitsrv serve", argv, port, "/healthz", work / "suitsrv.log")


def http(tpm: Swtpm, plan: Plan, work: Path, report: Report) -> None:
    handle, ak = tpm.create_ak(AK_TEMPLATES["ECC P-256"])
    data_dir, payload = work / "data", work / "payload.bin"
    vendor, tokens, key = asyncio.run(_seed(data_dir, ak, plan.devices))
    payload.write_bytes(HTTP_FIRMWARE)
    rounds, med = plan.http_rounds, bench_service._median
    with contextlib.ExitStack() as stack:
        stack.callback(tpm.tpm.flush_context, handle)
        executor = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="swtpm"))
        ours = stack.enter_context(_serve(data_dir, work))
        bare = stack.enter_context(bench_service.baseline(payload, work / "baseline.log"))
        manifest = asyncio.run(_publish(ours.url, vendor, key, tokens))
        agent = Agent(tpm, handle, tpm.measure([(b"firmware", HTTP_FIRMWARE)], None), tpm.pcr16())
        ear_length = asyncio.run(_check(ours, bare, tokens[0], agent))
        devices = Candidate(ours.url, agent, tpm, executor)
        generator = bench_service.AiohttpLoad(tokens)
        bare_url = f"{bare.url}/json"

        def measure(clients: list[str], seconds: int) -> Callable[[Server], Load]:
            def run(server: Server) -> Load:
                if server is ours:
                    return devices.run(clients, seconds)
                return generator.run(bare_url, seconds, len(clients))

            return run

        for server in (ours, bare):  # warm up both servers, SQLite's and the OS's caches
            measure(tokens, 1)(server)
        devices.extra.clear()
        print(f"  HTTP: {rounds} x {plan.http_seconds} s per side, {plan.devices} devices",
              file=sys.stderr)  # fmt: skip
        sat = bench_service._interleaved(
            rounds, [ours, bare], measure(tokens, plan.http_seconds), "/s"
        )
        print(f"  HTTP: {rounds} x {plan.unloaded_seconds} s per side, 1 device", file=sys.stderr)
        one = bench_service._interleaved(
            rounds, [ours, bare], measure(tokens[:1], plan.unloaded_seconds), "/s"
        )
        # The same route under wrk, only to tell a client-bound baseline from a server-bound one.
        wrk, wrk_rate = shutil.which("wrk"), 0.0
        if wrk and med(sat[bare.name], "generator_cpu") > 0.8:
            load = bench_service.Wrk(wrk, work, tokens)
            wrk_rate = load.run(bare_url, plan.http_seconds, plan.devices).rate
    a, b, a1, b1 = sat[ours.name], sat[bare.name], one[ours.name], one[bare.name]
    bare_name = f"bare aiohttp GET /json, same aiohttp client, {plan.devices} connections"
    sat_name = f"service.attest {plan.devices} devices, saturated"
    one_name, one_bare = "service.attest 1 device", "same, 1 connection"
    report.samples.extend([
        Sample(f"{sat_name}: attestations/s (challenge + evidence + EAR) vs requests/s",
               med(a, "rate"), "ops/s", bare_name, med(b, "rate"), ">=0.25"),
        *(Sample(f"{sat_name}: evidence request {p}", med(a, f"{p}_ms"), "ms", bare_name,
                 med(b, f"{p}_ms"), None) for p in ("p50", "p99")),
        Sample(f"{one_name}: attestations/s vs requests/s", med(a1, "rate"), "ops/s", one_bare,
               med(b1, "rate"), None),
        *(Sample(f"{one_name}: evidence request {p}", med(a1, f"{p}_ms"), "ms", one_bare,
                 med(b1, f"{p}_ms"), None) for p in ("p50", "p99")),
    ])  # fmt: skip
    report.method.extend([
        f"HTTP: `suitsrv serve` (access log off) on a fresh data directory: {plan.devices} "
        "devices enrolled with the swtpm's ECC P-256 AK (`ak_public`), one release of one image "
        f"published over HTTP (manifest {manifest[:12]}…) and reported installed by every device; "
        "the baseline is bench_service's bare aiohttp app (its web.json_response route); both "
        f"pinned to CPU {SERVER_CPU}",
        f"HTTP client: aiohttp {aiohttp.__version__} in this process on CPU {GENERATOR_CPU}, one "
        "connection per device; a device loops POST challenge → quote of that nonce on the swtpm "
        f"(on CPU {GENERATOR_CPU}, one quote at a time, in a worker thread) → POST evidence, and "
        "an attestation counts when that answers 200 affirming; latency is the evidence "
        "request's (appraise_tpm, an ES256 EAR signed, the verdict stored in SQLite); "
        f"{rounds} interleaved rounds of {plan.http_seconds} s ({plan.devices} devices) and "
        f"{plan.unloaded_seconds} s (1 device) per side, median per side; the first "
        f"attestation checked end to end: affirming, its {ear_length}-character EAR verified "
        "with the JWKS",
    ])  # fmt: skip
    # devices.extra: (challenge p50 ms, quote p50 ms, swtpm cores) per run, saturated runs first
    busy = [statistics.median(x[i] for x in devices.extra[:rounds]) for i in range(3)]
    idle = [statistics.median(x[i] for x in devices.extra[rounds:]) for i in range(2)]
    report.notes.extend([
        f"cores busy, {plan.devices} devices: suitsrv {bench_service._cores(a)}, swtpm "
        f"{busy[2]:.2f}; bare {bench_service._cores(b)}",
        f"cores busy, 1 device: suitsrv {bench_service._cores(a1)}; "
        f"bare {bench_service._cores(b1)}",
        f"per attestation, medians: {plan.devices} devices, challenge request p50 "
        f"{busy[0]:.2f} ms, quote p50 {busy[1]:.2f} ms (client side: the swtpm and the queue "
        f"for it); 1 device, challenge p50 {idle[0]:.2f} ms, quote p50 {idle[1]:.2f} ms",
        "the rate ratio compares unlike operations on purpose: an attestation is two requests, "
        "an appraisal, an ES256 EAR and a SQLite write, the baseline one bare request",
        "saturated latency is a closed loop's: p50 is about devices / rate (Little's law)",
    ])  # fmt: skip
    if wrk_rate:
        report.notes.append(
            f"the aiohttp client used {med(b, 'generator_cpu'):.2f} of its core against the bare "
            f"route, so that baseline is the client's limit: wrk (1 thread, {plan.devices} "
            f"connections) drove the same route at {wrk_rate:,.0f} req/s, which would make the "
            f"rate ratio {med(a, 'rate') / wrk_rate:.3f}"
        )
    if devices.failed:
        report.notes.append(
            f"{len(devices.failed)} attestations failed or were not affirmed, e.g. "
            f"{devices.failed[0][:200]}"
        )


def run(quick: bool, rounds: int, seconds: float, rate: Rate) -> Report:
    """Quote on a swtpm, time offline (this process on CPU 0), then over HTTP (this process the
    client on the generator core); every subprocess is stopped before returning."""
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    report = Report([], [], [])
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="suitsrv-attest-")))
        tpm = stack.enter_context(Swtpm(work / "swtpm", work / "swtpm.log"))
        quoted = make_quotes(tpm, plan.quotes)
        report.method.extend([
            f"quotes: swtpm {_swtpm_version()} through tpm2-pytss; PCR 16 (SHA-256) extended "
            "with 2 images, logged in a compact event log; per AK (ECC P-256 ECDSA-SHA256, "
            "RSA-2048 RSASSA-SHA256; restricted signing keys under the endorsement hierarchy) "
            f"{plan.quotes} quotes of 20-character nonces, timed in rotation, with the clock of "
            "an earlier quote as `previous`",
            f"offline: {rounds} interleaved rounds x {seconds:g} s per side, median per side, "
            "bench._rate's loop on both sides; every quote passes (affirming) before it is "
            "timed; appraise_tpm is the quote appraisal the targets apply to, verify_quote is "
            "shown for information",
        ])  # fmt: skip
        offline(quoted, rounds, seconds, rate, work, report)
        stack.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
        os.sched_setaffinity(0, {GENERATOR_CPU})  # this process is the HTTP client now
        http(tpm, plan, work, report)
    report.method.append(f"wall time: {time.perf_counter() - started:.0f} s")
    report.notes.append(
        f"1-minute load average {load_before} before, "
        f"{Path('/proc/loadavg').read_text().split()[0]} after: pinning keeps our processes "
        "apart, not other processes off these cores ('its core busy' counts everyone)"
    )
    return report


def _swtpm_version() -> str:
    done = subprocess.run([shutil.which("swtpm") or "swtpm", "--version"], check=False,
                          capture_output=True, text=True, timeout=10)  # fmt: skip
    words = (done.stdout or done.stderr).split()
    return next((w.rstrip(",") for w in words if w[:1].isdigit()), "(version unknown)")
