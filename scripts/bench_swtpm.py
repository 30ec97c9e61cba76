"""The attest suite's device side: a swtpm on loopback (through tpm2-pytss, as tests/swtpm.py
runs it), restricted signing AKs, images measured into PCR 16 with a compact event log, and
quotes of nonces."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_common
from bench_common import GENERATOR_CPU
from tpm2_pytss import ESAPI
from tpm2_pytss import types as tss
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT

from attest.eventlog import Event, encode_compact_log
from attest.quote import PcrValues
from attest.tpm import ClockInfo, PublicKey, TpmAlg, parse_attest, parse_public

AK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)  # fmt: skip
AK_TEMPLATES = {"ECC P-256": "ecc256:ecdsa-sha256:null", "RSA-2048": "rsa2048:rsassa-sha256:null"}
PCR = 16
# Offline: a bootloader and a firmware image measured into PCR 16 (tests/test_appraise.py).
IMAGES = ((b"bootloader", b"bootloader 7" * 50), (b"firmware", b"thermostat firmware 1.2.0" * 100))
MANIFEST_DIGEST = hashlib.sha256(b"the manifest").digest()


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
                bench_common._pinned(argv, GENERATOR_CPU), stdout=out, stderr=subprocess.STDOUT,
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


def _swtpm_version() -> str:
    done = subprocess.run([shutil.which("swtpm") or "swtpm", "--version"], check=False,
                          capture_output=True, text=True, timeout=10)  # fmt: skip
    words = (done.stdout or done.stderr).split()
    return next((w.rstrip(",") for w in words if w[:1].isdigit()), "(version unknown)")
