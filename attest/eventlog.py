"""Measured-boot event logs: parse, replay, and check the replay against quoted PCRs.

Three formats, told apart by the first byte (a CBOR array head, major type 4, would be a
TCG pcrIndex of 128 or more, which no PC Client TPM has):

* ``compact``: the CBOR log of our own devices (DESIGN.md "How a manifest becomes a
  reference value"). One event per measured component; the value extended is the SUIT
  image digest itself, so ``PCR = H_alg(PCR || digest)``::

      log   = [* event]
      event = {
        1 => uint,            ; pcr, 0..23 (default PCR 16)
        2 => uint,            ; alg: TPM_ALG_ID of the PCR bank, e.g. 11 = SHA-256
        3 => bstr,            ; digest extended: the SUIT image digest (bank-sized)
        ? 4 => [* bstr],      ; component-id (SUIT_Component_Identifier)
        ? 5 => bstr,          ; manifest-digest: digest of the installed manifest
        ? 6 => uint,          ; sequence-number of that manifest
        ? 7 => tstr,          ; description
      }

  Unknown keys are refused: the format is ours, and a key we do not know is a device we
  do not understand.
* ``tcg-sha1``: TCG PC Client Platform Firmware Profile (PFP) legacy log of
  TCG_PCClientPCREvent, all little-endian:
  ``pcrIndex u32 | eventType u32 | digest[20] | eventDataSize u32 | event``.
* ``tcg-crypto-agile``: the first event is a TCG_PCClientPCREvent of type EV_NO_ACTION whose
  data is TCG_EfiSpecIDEvent ("Spec ID Event03\\0" | platformClass u32 | specVersionMinor u8
  | specVersionMajor u8 | specErrata u8 | uintnSize u8 | numberOfAlgorithms u32 |
  {algorithmId u16, digestSize u16}* | vendorInfoSize u8 | vendorInfo), and every later
  event is a PFP TCG_PCR_EVENT2: ``pcrIndex u32 | eventType u32 | count u32 |
  {hashAlg u16, digest[size from the table]}* | eventSize u32 | event``. Digests of banks
  this verifier cannot hash (SM3) are stepped over using the table's sizes.

Replay starts every PCR at zero. PCRs 17-22 read all-FF after TPM2_Startup, but they are
only extended after a dynamic launch, whose _TPM_Hash_Start resets them to zero first
(TPM 2.0 Part 1, D-RTM), so zero is the right start for any event that touches them; PCRs
the log does not extend are never compared. An EV_NO_ACTION "StartupLocality" event (PFP
TCG_EfiStartupLocalityEvent) sets PCR0's start to ``00…00 || locality`` (locality 3 or 4).
EV_NO_ACTION events are never extended.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from . import _cbor
from .errors import DecodeError, UnsupportedError, VerificationError
from .tpm import TpmAlg, digest_size

__all__ = [
    "EV_NO_ACTION",
    "Event",
    "EventLog",
    "encode_compact_log",
    "parse_event_log",
    "replay",
    "verify_replay",
]

EV_NO_ACTION: Final = 0x00000003
MAX_PCR: Final = 23  # PC Client platform TPM profile: 24 PCRs
MAX_EVENT_DATA: Final = 1 << 20
MAX_LOG_SIZE: Final = 1 << 26

# Banks this verifier can replay: TPM_ALG_ID -> hashlib name (no SM3 in OpenSSL builds).
_HASHES: Final[Mapping[int, str]] = {
    0x0004: "sha1",
    0x000B: "sha256",
    0x000C: "sha384",
    0x000D: "sha512",
}
_SPEC_ID_03: Final = b"Spec ID Event03\x00"
_STARTUP_LOCALITY: Final = b"StartupLocality\x00"
_U32: Final = struct.Struct("<I")
_U16: Final = struct.Struct("<H")


@dataclass(frozen=True)
class Event:
    """One measurement. ``event_type`` and ``data`` are the TCG fields (None/empty in a
    compact log); the last four fields come only from compact logs."""

    pcr: int
    event_type: int | None
    digests: Mapping[TpmAlg, bytes]
    data: bytes
    component_id: tuple[bytes, ...] | None = None
    manifest_digest: bytes | None = None
    sequence_number: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class EventLog:
    """A parsed log: ``format`` is "compact", "tcg-sha1" or "tcg-crypto-agile"; ``raw``
    holds the bytes received."""

    format: str
    events: tuple[Event, ...]
    raw: bytes
    # The replay of ``events`` (a pure function of them), computed by the first
    # verify_replay and kept: a parsed log is shared by every appraisal of the same bytes.
    _replayed: list[_Replayed] = field(default_factory=list, init=False, repr=False, compare=False)


# Per bank the replayed (PCR, value) pairs in ascending PCR order.
_Replayed = tuple[tuple[TpmAlg, tuple[tuple[int, bytes], ...]], ...]


def parse_event_log(data: bytes) -> EventLog:
    """Parse a compact (CBOR) or TCG PC Client event log, detected by its first byte.

    A parsed log is immutable and a pure function of its bytes, and a fleet running one
    release sends the same log again and again, so logs up to ``_MEMO_SIZE`` bytes are
    memoised by their exact bytes (refused input raises every time; nothing is skipped)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"event log: expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise DecodeError("event log: empty input")
    if len(raw) > MAX_LOG_SIZE:
        raise DecodeError(f"event log: {len(raw)} bytes exceeds the limit of {MAX_LOG_SIZE}")
    return _parse_memo(raw) if len(raw) <= _MEMO_SIZE else _parse(raw)


_MEMO_SIZE: Final = 16 << 10  # x 256 entries: at most 4 MiB of logs held


@functools.lru_cache(maxsize=256)
def _parse_memo(raw: bytes) -> EventLog:
    return _parse(raw)


def _parse(raw: bytes) -> EventLog:
    if raw[0] >> 5 == 4:
        return EventLog("compact", _parse_compact(raw), raw)
    fmt, events = _TcgReader(raw).parse()
    _check_startup_locality(events)
    return EventLog(fmt, events, raw)


# --- compact ---------------------------------------------------------------------------

_COMPACT_KEYS: Final = frozenset(range(1, 8))


def _parse_compact(raw: bytes) -> tuple[Event, ...]:
    items = _cbor.loads(raw, what="compact event log", max_size=MAX_LOG_SIZE, max_depth=3)
    if not isinstance(items, list):
        raise DecodeError("compact event log: not an array")
    return tuple(_compact_event(i, item) for i, item in enumerate(items))


def _compact_event(i: int, item: object) -> Event:
    where = f"compact event log: event {i}"
    if not isinstance(item, dict):
        raise DecodeError(f"{where}: not a map")
    unknown = set(item) - _COMPACT_KEYS
    if unknown:
        raise DecodeError(f"{where}: unknown key(s) {sorted(unknown, key=repr)}")
    for key in (1, 2, 3):
        if key not in item:
            raise DecodeError(f"{where}: missing key {key}")
    pcr = _uint(item[1], f"{where}: pcr")
    if pcr > MAX_PCR:
        raise DecodeError(f"{where}: PCR {pcr} is out of range 0..{MAX_PCR}")
    alg = _bank(_uint(item[2], f"{where}: alg"), where)
    digest = item[3]
    if not isinstance(digest, bytes) or len(digest) != digest_size(alg):
        raise DecodeError(f"{where}: digest is not a {digest_size(alg)}-byte {alg.name} digest")
    component_id = item.get(4)
    if component_id is not None:
        if not isinstance(component_id, list) or not all(
            isinstance(part, bytes) for part in component_id
        ):
            raise DecodeError(f"{where}: component-id is not an array of byte strings")
        component_id = tuple(component_id)
    manifest_digest = item.get(5)
    if manifest_digest is not None and not isinstance(manifest_digest, bytes):
        raise DecodeError(f"{where}: manifest-digest is not a byte string")
    sequence_number = item.get(6)
    if sequence_number is not None:
        sequence_number = _uint(sequence_number, f"{where}: sequence-number")
    description = item.get(7)
    if description is not None and not isinstance(description, str):
        raise DecodeError(f"{where}: description is not a text string")
    return Event(
        pcr, None, MappingProxyType({alg: digest}), b"",
        component_id, manifest_digest, sequence_number, description,
    )  # fmt: skip


def _uint(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise DecodeError(f"{where} is not an unsigned integer")
    return value


def _bank(alg_id: int, where: str) -> TpmAlg:
    if alg_id not in _HASHES:
        raise UnsupportedError(f"{where}: hash algorithm 0x{alg_id:04x} is not supported")
    return TpmAlg(alg_id)


def encode_compact_log(events: Sequence[Event]) -> bytes:
    """The device side: encode events as a deterministic compact log.

    Each event must carry exactly one bank digest and no TCG fields (``event_type`` None,
    ``data`` empty); anything else is a programming error (RuntimeError)."""
    items: list[dict[int, object]] = []
    for i, ev in enumerate(events):
        if ev.event_type is not None or ev.data or len(ev.digests) != 1:
            raise RuntimeError(f"event {i}: not a compact event (one digest, no TCG fields)")
        ((alg, digest),) = ev.digests.items()
        if int(alg) not in _HASHES or len(digest) != digest_size(alg):
            raise RuntimeError(f"event {i}: digest does not fit hash algorithm {alg!r}")
        if not 0 <= ev.pcr <= MAX_PCR:
            raise RuntimeError(f"event {i}: PCR {ev.pcr} is out of range")
        item: dict[int, object] = {1: ev.pcr, 2: int(alg), 3: bytes(digest)}
        if ev.component_id is not None:
            item[4] = [bytes(part) for part in ev.component_id]
        if ev.manifest_digest is not None:
            item[5] = bytes(ev.manifest_digest)
        if ev.sequence_number is not None:
            item[6] = ev.sequence_number
        if ev.description is not None:
            item[7] = ev.description
        items.append(item)
    return _cbor.dumps(items)


# --- TCG PC Client ---------------------------------------------------------------------


class _TcgReader:
    __slots__ = ("data", "pos", "sizes")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.sizes: dict[int, int] = {}  # crypto-agile: algorithmId -> digestSize

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError(f"event log: truncated {what} at byte {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u32(self, what: str) -> int:
        value: int = _U32.unpack(self.take(4, what))[0]
        return value

    def event_data(self, index: int) -> bytes:
        size = self.u32("event size")
        if size > MAX_EVENT_DATA:
            raise DecodeError(f"event log: event {index} data of {size} bytes exceeds the limit")
        return self.take(size, "event data")

    def pcr(self, index: int) -> int:
        pcr = self.u32("pcrIndex")
        if pcr > MAX_PCR:
            raise DecodeError(f"event log: event {index} names PCR {pcr}, out of range")
        return pcr

    def parse(self) -> tuple[str, tuple[Event, ...]]:
        first = self.legacy(0)
        if first.event_type == EV_NO_ACTION and first.data.startswith(_SPEC_ID_03):
            self.spec_id(first.data)
            events = [first]
            while self.pos < len(self.data):
                events.append(self.agile(len(events)))
            return "tcg-crypto-agile", tuple(events)
        events = [first]
        while self.pos < len(self.data):
            events.append(self.legacy(len(events)))
        return "tcg-sha1", tuple(events)

    def legacy(self, index: int) -> Event:
        pcr = self.pcr(index)
        event_type = self.u32("eventType")
        digest = self.take(20, "SHA-1 digest")
        data = self.event_data(index)
        return Event(pcr, event_type, MappingProxyType({TpmAlg.SHA1: digest}), data)

    def spec_id(self, data: bytes) -> None:
        # TCG_EfiSpecIDEvent after the 16-byte signature: 4+1+1+1+1 bytes, then the count.
        fixed = len(_SPEC_ID_03) + 8
        if len(data) < fixed + 4:
            raise DecodeError("event log: Spec ID Event03 is truncated")
        (count,) = _U32.unpack_from(data, fixed)
        end = fixed + 4 + 4 * count
        if not 1 <= count <= 16 or len(data) < end + 1 or len(data) != end + 1 + data[end]:
            raise DecodeError("event log: malformed Spec ID Event03 algorithm table")
        for i in range(count):
            alg_id, size = struct.unpack_from("<HH", data, fixed + 4 + 4 * i)
            if alg_id in self.sizes or not 1 <= size <= 64:
                raise DecodeError(f"event log: Spec ID Event03 entry for 0x{alg_id:04x} is bad")
            if alg_id in _HASHES and size != digest_size(TpmAlg(alg_id)):
                raise DecodeError(f"event log: Spec ID Event03 gives 0x{alg_id:04x} {size} bytes")
            self.sizes[alg_id] = size

    def agile(self, index: int) -> Event:
        pcr = self.pcr(index)
        event_type = self.u32("eventType")
        count = self.u32("digest count")
        if count > len(self.sizes):
            raise DecodeError(f"event log: event {index} has {count} digests, more than banks")
        digests: dict[TpmAlg, bytes] = {}
        seen: set[int] = set()
        for _ in range(count):
            (alg_id,) = _U16.unpack(self.take(2, "digest algorithm"))
            size = self.sizes.get(alg_id)
            if size is None or alg_id in seen:
                raise DecodeError(f"event log: event {index} has a bad digest alg 0x{alg_id:04x}")
            seen.add(alg_id)
            digest = self.take(size, "digest")
            if alg_id in _HASHES:
                digests[TpmAlg(alg_id)] = digest
        data = self.event_data(index)
        return Event(pcr, event_type, MappingProxyType(digests), data)


def _startup_locality(event: Event) -> int | None:
    if (
        event.event_type == EV_NO_ACTION
        and event.pcr == 0
        and len(event.data) == 17
        and event.data.startswith(_STARTUP_LOCALITY)
    ):
        return event.data[16]
    return None


def _check_startup_locality(events: tuple[Event, ...]) -> None:
    """At most one StartupLocality event, locality 0, 3 or 4, before any PCR0 extend."""
    seen = extended0 = False
    for i, ev in enumerate(events):
        locality = _startup_locality(ev)
        if locality is not None:
            if seen or extended0 or locality not in (0, 3, 4):
                raise DecodeError(f"event log: event {i}: misplaced or bad StartupLocality")
            seen = True
        elif ev.pcr == 0 and ev.event_type != EV_NO_ACTION:
            extended0 = True


# --- replay ----------------------------------------------------------------------------


def replay(log: EventLog, banks: Iterable[TpmAlg]) -> dict[TpmAlg, dict[int, bytes]]:
    """Replay the log into each bank: ``{bank: {pcr: value}}`` for the PCRs it extends."""
    result: dict[TpmAlg, dict[int, bytes]] = {}
    for bank in banks:
        hash_name = _HASHES.get(int(bank))
        if hash_name is None:
            raise UnsupportedError(f"cannot replay the {bank!r} bank")
        size = digest_size(bank)
        start0 = bytes(size)
        pcrs: dict[int, bytes] = {}
        for ev in log.events:
            if ev.event_type == EV_NO_ACTION:
                locality = _startup_locality(ev)
                if locality is not None:
                    start0 = bytes(size - 1) + bytes((locality,))
                continue
            digest = ev.digests.get(bank)
            if digest is None:
                continue
            prev = pcrs.get(ev.pcr, start0 if ev.pcr == 0 else bytes(size))
            pcrs[ev.pcr] = hashlib.new(hash_name, prev + digest).digest()
        result[bank] = pcrs
    return result


def verify_replay(
    log: EventLog,
    quoted: Mapping[TpmAlg, Mapping[int, bytes]],
    *,
    require_all: bool = False,
) -> EventLog:
    """Require every quoted PCR the log extends to equal its replay; return the log.

    PCRs the log extends but the quote does not cover are ignored, unless ``require_all``.
    A non-empty log of which no PCR is quoted fails too: nothing in it would be verified.
    """
    if not log._replayed:  # a list of one, filled once: the log is frozen, its replay fixed
        banks = sorted(
            {alg for ev in log.events if ev.event_type != EV_NO_ACTION for alg in ev.digests}
        )
        replayed = replay(log, banks).items()
        log._replayed.append(tuple((bank, tuple(sorted(pcrs.items()))) for bank, pcrs in replayed))
    compared = extended = 0
    for bank, pcrs in log._replayed[0]:
        bank_quote = quoted.get(bank, {})
        for pcr, value in pcrs:
            extended += 1
            if pcr not in bank_quote:
                if require_all:
                    raise VerificationError(f"{bank.name} PCR {pcr} is extended but not quoted")
                continue
            compared += 1
            if bytes(bank_quote[pcr]) != value:
                raise VerificationError(
                    f"{bank.name} PCR {pcr}: quoted {bytes(bank_quote[pcr]).hex()}, "
                    f"event log replays to {value.hex()}"
                )
    if extended and not compared:
        raise VerificationError("the quote covers none of the PCRs the event log extends")
    return log
