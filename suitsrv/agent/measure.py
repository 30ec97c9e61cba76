"""Measured "boot" and quotes: the TPM side of attestation (docs/attestation.md).

At boot the device resets its PCR (16 by default), extends it once per installed component
with the SHA-256 of the image **as found in the slot** (a measurement of what runs, not of
what the manifest promised), and writes the compact event log
``{pcr, alg, digest, component-id, manifest-digest, sequence-number, description}``. The
verifier replays the log, compares it with the quoted PCR and the images with the manifest
the device reported installing.

On real hardware this is a stand-in for a boot loader: PCR 16 is the PC Client debug PCR,
which any software at locality 0 may reset, so these measurements show what the agent saw,
not what firmware enforced. A swtpm restarted since the last boot has a fresh PCR that no
longer replays the log; the agent then boots again before it quotes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from attest import AttestError, Event, TpmAlg, encode_compact_log, parse_event_log, replay
from manifests import parse_envelope, summarize

from .config import AgentConfig
from .state import DeviceState
from .tpm import Quote, Tpm

__all__ = ["BootRecord", "boot", "quote"]


@dataclass(frozen=True)
class BootRecord:
    """One boot: the slot, the PCR value after the measurements, the events logged, and
    components whose image was missing (not measured)."""

    slot: str
    pcr: int
    pcr_value: bytes
    events: tuple[Event, ...]
    missing: tuple[str, ...]
    manifest_digest: str | None
    sequence_number: int | None


def _sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.digest()


def _boot_with(tpm: Tpm, config: AgentConfig, state: DeviceState) -> BootRecord:
    slot = state.current_slot()
    installed = state.installed_envelope(slot)
    events: list[Event] = []
    missing: list[str] = []
    digest_hex: str | None = None
    sequence: int | None = None
    tpm.reset_pcr()
    if installed is not None:
        envelope = parse_envelope(installed)  # our own copy, verified when it was installed
        digest_hex, sequence = envelope.digest.hex, envelope.manifest.sequence_number
        for summary in summarize(envelope.manifest):
            if not summary.image_digests:
                continue
            path = state.image_path(slot, summary.component_id)
            if not path.is_file():
                missing.append(path.name)
                continue
            measured = _sha256_file(path)
            tpm.measure(measured)
            events.append(Event(config.pcr, None, {TpmAlg.SHA256: measured}, b"",
                                summary.component_id, envelope.digest.value, sequence,
                                f"slot {slot}"))  # fmt: skip
    state.save_event_log(encode_compact_log(events))
    value = tpm.read_pcr()
    return BootRecord(slot, config.pcr, value, tuple(events), tuple(missing), digest_hex, sequence)


def boot(config: AgentConfig, state: DeviceState) -> BootRecord:
    """Reset the PCR, measure the current slot's images, write the event log."""
    with Tpm.open(config.tcti, pcr=config.pcr, ek_template=config.ek_template) as tpm:
        return _boot_with(tpm, config, state)


def _replays(log: bytes | None, pcr: int, value: bytes) -> bool:
    if log is None:
        return False
    try:
        replayed = replay(parse_event_log(log), [TpmAlg.SHA256])[TpmAlg.SHA256]
    except AttestError:
        return False
    return replayed.get(pcr, bytes(32)) == value


def quote(
    config: AgentConfig, state: DeviceState, nonce: bytes
) -> tuple[Quote, bytes, BootRecord | None]:
    """Quote the PCR with ``nonce``; returns the quote, the event log it matches and, when the
    PCR no longer replayed the log (the TPM restarted), the boot that was run first."""
    with Tpm.open(config.tcti, pcr=config.pcr, ek_template=config.ek_template) as tpm:
        rebooted = None
        if not _replays(state.event_log(), config.pcr, tpm.read_pcr()):
            rebooted = _boot_with(tpm, config, state)
        log = state.event_log()
        if log is None:  # _boot_with always writes one
            raise RuntimeError("no event log after boot")
        return tpm.quote(nonce), log, rebooted
