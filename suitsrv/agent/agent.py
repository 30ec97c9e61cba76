"""The device agent: enrollment, updates, measured boot, attestation and the configuration
vault, each one step the CLI (and the demo) can run on its own, and ``run`` to loop over them
(docs/agent.md)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from . import vault
from .client import Context, check_json, open_session
from .config import AgentConfig
from .errors import AgentError, ServerError
from .measure import BootRecord, boot, quote
from .state import DeviceState
from .tpm import Tpm
from .update import PollResult, PollStatus, boot_line, poll_once
from .vault import BackupResult, RestoreResult

__all__ = ["Agent", "Identity", "Verdict"]

_DEFAULT_INTERVAL = 60  # seconds, when the service gave no Poll-Interval


@dataclass(frozen=True)
class Identity:
    """The TPM's keys as the service registers them (marshalled TPM2B_PUBLIC)."""

    ek_public: bytes
    ak_public: bytes


@dataclass(frozen=True)
class Verdict:
    """The service's attestation result for our evidence."""

    status: str
    reasons: tuple[str, ...]
    ear: str
    expires_at: float | None
    rebooted: bool


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Agent:
    """One device. Use as ``async with Agent(config) as agent:``; ``say`` receives one line
    per step. ``max_bytes_per_request`` cuts every download answer after that many bytes
    (tests and demos of resuming)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_bytes_per_request: int | None = None,
    ) -> None:
        self.config = config
        self.state = DeviceState(config.state_dir)
        self.say = say
        self._clock = clock
        self._sleep = sleep
        self._max_bytes = max_bytes_per_request
        self._session: aiohttp.ClientSession | None = None
        self._enroll_refused = False

    async def __aenter__(self) -> Agent:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self._session = open_session(self.config)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def _ctx(self) -> Context:
        if self._session is None:
            raise RuntimeError("use the agent as `async with Agent(config) as agent:`")
        return Context(self.config, self.state, self._session, self.say, self._clock,
                       self._max_bytes)  # fmt: skip

    def _identity(self) -> Identity:
        c = self.config
        with Tpm.open(c.tcti, pcr=c.pcr, ek_template=c.ek_template) as tpm:
            return Identity(tpm.ek_public(), tpm.ak_public())

    async def identity(self) -> Identity:
        """The EK and AK public areas (the EK is what the manufacturer registers)."""
        return await asyncio.to_thread(self._identity)

    # --- enrollment ----------------------------------------------------------------------

    def _activate(self, blob: bytes, encrypted: bytes) -> bytes:
        c = self.config
        with Tpm.open(c.tcti, pcr=c.pcr, ek_template=c.ek_template) as tpm:
            return tpm.activate(blob, encrypted)

    async def enroll(self, *, force: bool = False) -> bool:
        """Enroll the AK by credential activation; False when it was enrolled before."""
        keys = await self.identity()
        if not force and self.state.enrolled_ak() == keys.ak_public:
            self.say("enroll: AK already enrolled")
            return False
        ctx = self._ctx
        body = {"ek_public": base64.b64encode(keys.ek_public).decode(),
                "ak_public": base64.b64encode(keys.ak_public).decode()}  # fmt: skip
        url = self.config.url("/v1/device/attestation/enroll")
        async with ctx.session.post(url, json=body) as resp:
            challenge = await check_json(resp, "enroll", 201)
        try:
            blob = base64.b64decode(str(challenge["credential_blob"]), validate=True)
            encrypted = base64.b64decode(str(challenge["encrypted_secret"]), validate=True)
        except (KeyError, ValueError) as exc:
            raise ServerError("enroll", 201, "", f"malformed credential challenge: {exc}") from exc
        secret = await asyncio.to_thread(self._activate, blob, encrypted)
        self.say("enroll: credential activated in the TPM (the AK lives with the registered EK)")
        answer = {"enrollment_id": challenge.get("enrollment_id"),
                  "secret": base64.b64encode(secret).decode()}  # fmt: skip
        url = self.config.url("/v1/device/attestation/activate")
        async with ctx.session.post(url, json=answer) as resp:
            await check_json(resp, "activate", 200)
        self.state.save_enrollment(keys.ak_public, self._clock())
        name = hashlib.sha256(keys.ak_public).hexdigest()[:16]
        self.say(f"enroll: AK enrolled with the service (public area SHA-256 {name}…)")
        return True

    # --- boot, update, attestation -------------------------------------------------------

    async def boot(self) -> BootRecord:
        """Measure the boot slot into the PCR and write the event log."""
        record = await asyncio.to_thread(boot, self.config, self.state)
        self.say(boot_line(record))
        return record

    async def poll_once(self) -> PollResult:
        """One update cycle (update.py)."""
        return await poll_once(self._ctx)

    async def attest(self) -> Verdict:
        """Challenge → quote of the boot measurements → evidence → the service's verdict."""
        session, config = self._ctx.session, self.config
        async with session.post(config.url("/v1/device/attestation/challenge")) as resp:
            challenge = await check_json(resp, "challenge", 201)
        if challenge.get("device_id") != config.device_id:
            raise AgentError(f"the token is device {challenge.get('device_id')!r}'s, "
                             f"not {config.device_id!r}'s")  # fmt: skip
        nonce_text = str(challenge.get("nonce", ""))
        nonce = base64.urlsafe_b64decode(nonce_text + "=" * (-len(nonce_text) % 4))
        booted = self.state.event_log() is not None
        tpm_quote, log, rebooted = await asyncio.to_thread(quote, config, self.state, nonce)
        if rebooted is not None:
            why = ("the PCR no longer replays the event log (TPM restarted?)" if booted
                   else "no boot measured yet")  # fmt: skip
            self.say(f"attest: {why}: booting first")
            self.say(boot_line(rebooted))
        evidence = {
            "format": "tpm2-quote", "nonce": nonce_text, "quote": _b64url(tpm_quote.attest),
            "signature": _b64url(tpm_quote.signature), "event_log": _b64url(log),
            "pcrs": {"sha256": {str(config.pcr): tpm_quote.pcr_value.hex()}},
        }  # fmt: skip
        async with session.post(config.url("/v1/device/attestation/evidence"),
                                json=evidence) as resp:  # fmt: skip
            body = await check_json(resp, "evidence", 200)
        reasons = body.get("reasons")
        verdict = Verdict(
            status=str(body.get("status")),
            reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
            ear=str(body.get("ear", "")),
            expires_at=body["expires_at"] if isinstance(body.get("expires_at"), float | int)
            else None,
            rebooted=rebooted is not None,
        )  # fmt: skip
        why = f" ({'; '.join(verdict.reasons)})" if verdict.reasons else ""
        self.say(f"attest: {verdict.status}{why}")
        return verdict

    # --- configuration vault -------------------------------------------------------------

    async def backup_config(self) -> BackupResult:
        """PUT the configuration file as the next backup (vault.py)."""
        return await vault.backup_config(self._ctx)

    async def restore_config(self) -> RestoreResult:
        """Restore the backup on offer into the configuration file and confirm (vault.py)."""
        return await vault.restore_config(self._ctx)

    # --- the loop ------------------------------------------------------------------------

    async def _enroll_once(self) -> None:
        """Enroll if never enrolled: retried each cycle while the service is unreachable,
        given up for this run when it refuses (e.g. the AK was registered without an EK)."""
        if self._enroll_refused or self.state.enrolled_ak() is not None:
            return
        try:
            await self.enroll()
        except ServerError as exc:
            if exc.status >= 500:
                raise
            self._enroll_refused = True
            self.say(f"enroll: not enrolled: {exc.detail or exc}")

    async def _cycle(self, attest_always: bool) -> tuple[bool, int | None]:
        try:
            await self._enroll_once()
            await vault.backup_if_changed(self._ctx)
            result = await self.poll_once()
            ok = result.status is not PollStatus.REFUSED
            if result.status is PollStatus.INSTALLED or attest_always:
                verdict = await self.attest()
                ok = ok and verdict.status == "affirming"
                if verdict.status == "affirming":
                    await self._restore_if_offered()
            return ok, result.poll_interval
        except (AgentError, aiohttp.ClientError, TimeoutError) as exc:
            self.say(f"error: {exc or type(exc).__name__}")
            return False, None

    async def _restore_if_offered(self) -> None:
        if self.config.config_file is None:
            return
        try:
            await self.restore_config()
        except ServerError as exc:
            if exc.problem != "restore-not-allowed":
                raise
            self.say(f"restore: nothing to restore now ({exc.detail})")

    async def run(
        self, *, once: bool = False, max_interval: float | None = None, attest_always: bool = False
    ) -> bool:
        """Boot, enroll if never enrolled, then poll (backing up a changed configuration,
        attesting after an install or on every cycle with ``attest_always``, restoring after
        an affirming verdict) and sleep for the service's Poll-Interval, at most
        ``max_interval``. ``once`` stops after one cycle and returns whether it went well:
        nothing refused, and any attestation affirming."""
        await self.boot()
        said: float | None = None
        while True:
            ok, interval = await self._cycle(attest_always)
            if once:
                return ok
            delay = float(interval if interval is not None else _DEFAULT_INTERVAL)
            if max_interval is not None:
                delay = min(delay, max_interval)
            if delay != said:  # the service jitters its hint: say it when it changes
                self.say(f"sleep: polling every {delay:g} s")
                said = delay
            await self._sleep(delay)
