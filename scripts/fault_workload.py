"""The writes a fault scenario makes and the ledger of what was sent and what was acknowledged.

Four kinds of write, each through the public HTTP API of a running ``suitsrv serve``: payload
uploads (PUT /v1/vendor/payloads/{sha256}), manifest uploads (POST /v1/vendor/manifests),
configuration backups (PUT /v1/device/config) and verdict writes (a challenge, then an EAT
answering it: POST /v1/device/attestation/evidence stores the device's latest verdict). A write
counts as acknowledged only when its 2xx answer arrived whole and says what was asked (the
digest, size or version); the audit (fault_audit.py) then checks each one against the store.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from fault_site import ATTEST_DEVICES, BACKUP_DEVICES, ENVELOPE_TYPE, OCTET, Site, sha256_hex

from manifests import parse_envelope

TIMEOUT = aiohttp.ClientTimeout(total=30)
#: Sends a body as a stream (the drain scenario holds one half back); None sends it whole.
Stream = Callable[[bytes], AsyncIterator[bytes]] | None


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged, across every round."""

    payloads: dict[str, int] = field(default_factory=dict)  # sha256 -> size
    acked_payloads: set[str] = field(default_factory=set)
    manifests: dict[str, bytes] = field(default_factory=dict)  # digest -> envelope
    manifest_payload: dict[str, str] = field(default_factory=dict)  # digest -> payload sha256
    acked_manifests: set[str] = field(default_factory=set)
    backups_sent: dict[str, set[str]] = field(default_factory=dict)  # device -> body sha256s
    acked_backups: dict[tuple[str, int], str] = field(default_factory=dict)  # -> body sha256
    nonces: dict[str, list[bytes]] = field(default_factory=dict)  # device -> evidence sent
    acked_verdicts: dict[tuple[str, int], str] = field(default_factory=dict)  # -> the EAR
    #: Answers no scenario expected (each scenario says which statuses it expects).
    unexpected: list[str] = field(default_factory=list)
    #: Acknowledged writes an audit found missing or wrong (keys like "payload:<sha256>").
    failed: set[str] = field(default_factory=set)
    _counter: int = 0

    def acknowledged(self) -> int:
        return (
            len(self.acked_payloads) + len(self.acked_manifests)
            + len(self.acked_backups) + len(self.acked_verdicts)
        )  # fmt: skip

    def verified(self) -> int:
        return self.acknowledged() - len(self.failed)

    def unique(self) -> int:
        """A number never handed out before: keeps payloads distinct and sequence numbers
        rising for every component, across rounds and restarts."""
        self._counter += 1
        return self._counter


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, read whole."""

    what: str
    status: int
    content_type: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def describe(self) -> str:
        return f"{self.what}: {self.status} {self.content_type} {self.body[:300]!r}"


async def _send(
    session: aiohttp.ClientSession, method: str, url: str, what: str, data: bytes,
    headers: dict[str, str], stream: Stream,
) -> Answer:  # fmt: skip
    body = data if stream is None else stream(data)
    async with session.request(method, url, data=body, headers=headers) as resp:
        return Answer(what, resp.status, resp.content_type, await resp.read())


def _json(answer: Answer) -> dict[str, object]:
    try:
        value = json.loads(answer.body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _refuse(answer: Answer, why: str) -> Answer:
    """A 2xx that acknowledges something else: not an acknowledgement (status 0)."""
    return Answer(f"{answer.what} ({why})", 0, answer.content_type, answer.body)


def payload_bytes(ledger: Ledger, rng: random.Random, size: int) -> bytes:
    """``size`` bytes (at least 8) that no other payload of this ledger has."""
    return ledger.unique().to_bytes(8, "big") + rng.randbytes(max(0, size - 8))


async def put_payload(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, data: bytes,
    stream: Stream = None,
) -> Answer:  # fmt: skip
    sha = sha256_hex(data)
    ledger.payloads[sha] = len(data)
    headers = {**site.vendor, "Content-Type": OCTET}
    answer = await _send(session, "PUT", f"{url}/v1/vendor/payloads/{sha}", f"PUT payload {sha}",
                         data, headers, stream)  # fmt: skip
    if answer.ok:
        view = _json(answer)
        if view.get("sha256") != sha or view.get("size") != len(data):
            return _refuse(answer, "acknowledges another payload")
        ledger.acked_payloads.add(sha)
    return answer


async def post_manifest(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, component: str,
    payload_sha: str, stream: Stream = None,
) -> Answer:  # fmt: skip
    """A manifest for the payload ``payload_sha`` (sent before: its size is in the ledger)."""
    envelope = site.envelope(component, ledger.unique(), payload_sha, ledger.payloads[payload_sha])
    digest = parse_envelope(envelope).digest.hex
    ledger.manifests[digest] = envelope
    ledger.manifest_payload[digest] = payload_sha
    headers = {**site.vendor, "Content-Type": ENVELOPE_TYPE}
    answer = await _send(session, "POST", f"{url}/v1/vendor/manifests", f"POST manifest {digest}",
                         envelope, headers, stream)  # fmt: skip
    if answer.ok:
        if _json(answer).get("digest") != digest:
            return _refuse(answer, "acknowledges another manifest")
        ledger.acked_manifests.add(digest)
    return answer


async def put_backup(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, device: str,
    data: bytes, stream: Stream = None,
) -> Answer:  # fmt: skip
    sha = sha256_hex(data)
    ledger.backups_sent.setdefault(device, set()).add(sha)
    headers = {**site.device(device), "Content-Type": OCTET}
    answer = await _send(session, "PUT", f"{url}/v1/device/config", f"PUT backup of {device}",
                         data, headers, stream)  # fmt: skip
    if answer.ok:
        view = _json(answer)
        version, size = view.get("version"), view.get("size")
        if not isinstance(version, int) or size != len(data):
            return _refuse(answer, "acknowledges another backup")
        if (device, version) in ledger.acked_backups:
            return _refuse(answer, f"version {version} was acknowledged before")
        ledger.acked_backups[(device, version)] = sha
    return answer


async def challenge(
    session: aiohttp.ClientSession, url: str, site: Site, device: str
) -> tuple[Answer, bytes]:
    """A fresh nonce for ``device`` (b"" unless the answer is 201)."""
    async with session.post(
        f"{url}/v1/device/attestation/challenge", headers=site.device(device)
    ) as resp:
        answer = Answer(
            f"challenge for {device}", resp.status, resp.content_type, await resp.read()
        )
    nonce = _json(answer).get("nonce")
    if answer.status != 201 or not isinstance(nonce, str):
        return answer, b""
    return answer, base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))


async def post_evidence(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, device: str,
    nonce: bytes, stream: Stream = None,
) -> Answer:  # fmt: skip
    sent = ledger.nonces.setdefault(device, [])
    index = len(sent)
    sent.append(nonce)
    headers = {**site.device(device), "Content-Type": "application/eat+cwt"}
    answer = await _send(session, "POST", f"{url}/v1/device/attestation/evidence",
                         f"verdict {index} of {device}", site.eat(device, nonce), headers,
                         stream)  # fmt: skip
    if answer.ok:
        ear = _json(answer).get("ear")
        if not isinstance(ear, str) or _json(answer).get("device_id") != device:
            return _refuse(answer, "acknowledges another verdict")
        ledger.acked_verdicts[(device, index)] = ear
    return answer


async def attest(
    session: aiohttp.ClientSession, url: str, site: Site, ledger: Ledger, device: str
) -> Answer:
    """Challenge, then evidence answering it: one verdict write."""
    answer, nonce = await challenge(session, url, site, device)
    if not nonce:
        return answer
    return await post_evidence(session, url, site, ledger, device, nonce)


async def run_clients(
    site: Site, url: str, ledger: Ledger, seed: int, *, per_worker: int = 100_000,
    max_payload: int = 96 << 10,
) -> None:  # fmt: skip
    """Concurrent clients writing until each made ``per_worker`` writes or the server went away
    (a connection error ends a worker quietly: the server was killed under its request). Two
    upload payload then manifest (each its own component), three back up (two racing on one
    device, so versions collide and are resealed), two attest. Any non-2xx answer is recorded
    as unexpected and ends that worker."""

    async def uploader(session: aiohttp.ClientSession, number: int) -> None:
        rng = random.Random(f"{seed}/upload/{number}")
        for _ in range(per_worker):
            data = payload_bytes(ledger, rng, rng.randint(16, max_payload))
            answer = await put_payload(session, url, site, ledger, data)
            if not answer.ok:
                break
            answer = await post_manifest(session, url, site, ledger, f"fw-{number}",
                                         sha256_hex(data))  # fmt: skip
            if not answer.ok:
                break
        else:
            return
        ledger.unexpected.append(answer.describe())

    async def backer(session: aiohttp.ClientSession, device: str, number: int) -> None:
        rng = random.Random(f"{seed}/backup/{number}")
        for _ in range(per_worker):
            data = payload_bytes(ledger, rng, rng.randint(16, 32 << 10))
            answer = await put_backup(session, url, site, ledger, device, data)
            if not answer.ok:
                ledger.unexpected.append(answer.describe())
                return

    async def attester(session: aiohttp.ClientSession, device: str) -> None:
        for _ in range(per_worker):
            answer = await attest(session, url, site, ledger, device)
            if not answer.ok:
                ledger.unexpected.append(answer.describe())
                return

    async def quietly(work: Awaitable[None]) -> None:
        try:
            await work
        except aiohttp.ClientError:
            pass  # the server died under this request
        except TimeoutError:
            ledger.unexpected.append(f"a request had no answer within {TIMEOUT.total} s")

    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        owners = (BACKUP_DEVICES[0], BACKUP_DEVICES[0], *BACKUP_DEVICES[1:])
        work = [
            *(uploader(session, n) for n in range(2)),
            *(backer(session, device, n) for n, device in enumerate(owners)),
            *(attester(session, device) for device in ATTEST_DEVICES),
        ]
        await asyncio.gather(*(quietly(w) for w in work))
