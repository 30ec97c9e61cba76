"""``suitsrv gateway-sim``: a home gateway that drives and shows the quarantine story; it opens
no real pinhole but writes what it would open to its state file (docs/gateway-sim.md)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import ssl
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import aiohttp

from .cli.keys import UsageError

__all__ = ["Device", "GatewaySim", "SimError", "SseEvent", "SseParser", "add_gateway_sim",
           "incident_summary", "parse_device"]  # fmt: skip

_MAX_EVENT: Final = 64 << 10  # a signal document is a few hundred bytes
_MAX_FAILURES: Final = 10  # failed connection attempts in a row before follow gives up
_STREAM_TIMEOUT: Final = aiohttp.ClientTimeout(sock_connect=10, sock_read=45)  # keep-alive: 15 s
_PINHOLE_STATES: Final = frozenset({"quarantined", "upgrading", "returning-to-service"})
_SAMPLE: Final = (("10.0.0.0/8", 23, 4000),)  # a telnet scan, the classic IoT incident
_say = functools.partial(print, flush=True)  # line by line, into a pipe too (the demo shows it)


class SimError(Exception):
    """The service refused a request, or sent or stored something the simulator cannot use."""


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str  # the last event id when it was dispatched ("" = none yet)


class SseParser:
    """text/event-stream, one line at a time (WHATWG HTML §9.2.6): ``feed`` a line without its
    terminator; a blank line dispatches the event gathered so far. ``last_id`` (what a reconnect
    sends as Last-Event-ID) moves on dispatch only: a stream cut mid-event asks for it again."""

    def __init__(self, last_id: str = "") -> None:
        self.last_id = self._id = last_id
        self._event, self._data, self._size = "", list[str](), 0

    def feed(self, line: str) -> SseEvent | None:
        if not line:
            self.last_id = self._id
            event, data, size = self._event or "message", "\n".join(self._data), self._size
            self._event, self._data, self._size = "", [], 0  # no data: none; over: dropped
            return SseEvent(event, data, self.last_id) if 0 < size <= _MAX_EVENT else None
        name, _, value = line.partition(":")  # a leading ":" is a comment (the keep-alive)
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._size += len(value) + 1
            if self._size <= _MAX_EVENT:
                self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # "retry" and unknown fields: ignored


@dataclass(frozen=True)
class Device:
    """A device as its gateway sees it: the state, and the MUD file and quarantine ACEs kept
    open while it is behind the pinhole (draft-richardson-shg-mud-quarantined-access)."""

    device_id: str
    state: str
    escalated: bool = False
    mud_url: str | None = None
    aces: tuple[str, ...] = ()

    @property
    def policy(self) -> str:
        return "pinhole" if self.state in _PINHOLE_STATES else "full"

    def pinhole(self) -> str:
        return f"pinhole: {self.mud_url} aces: {', '.join(self.aces)}"

    def as_json(self) -> dict[str, object]:  # a state file entry; parse_device reads it back
        pin = {"mud_url": self.mud_url, "enabled_ace_names": list(self.aces)} if self.aces else None
        return {"device_id": self.device_id, "state": self.state, "escalated": self.escalated,
                "policy": self.policy, "mud_url": self.mud_url, "pinhole": pin}  # fmt: skip


def parse_device(doc: object) -> Device:
    """A gateway device view, a signal payload or a state file entry: ``{"device_id", "state",
    "escalated"?, "mud_url"?, "pinhole"?: {"mud_url", "enabled_ace_names"}}``."""
    pin = (doc.get("pinhole") or {}) if isinstance(doc, dict) else None
    if isinstance(doc, dict) and isinstance(pin, dict):
        url, aces = pin.get("mud_url", doc.get("mud_url")), pin.get("enabled_ace_names", [])
        texts = (doc.get("device_id"), doc.get("state"), *(aces if isinstance(aces, list) else [0]))
        if all(isinstance(t, str) for t in texts) and isinstance(url, str | None):
            escalated = doc.get("escalated") is True
            return Device(doc["device_id"], doc["state"], escalated, url, tuple(aces))
    raise SimError(f"not a device: {doc!r:.200}")


def incident_summary(kind: str, now: float) -> dict[str, object]:
    """What a gateway reports: counts per destination name and port over the last five minutes,
    never packet contents (the service refuses any other field). The flows are a sample."""
    flows = [{"name": n, "port": p, "count": c} for n, p, c in _SAMPLE]
    return {"kind": kind, "window_start": now - 300, "window_end": now, "destinations": flows}


class GatewaySim:
    """A gateway acting through ``session`` on ``server``, printing what it does; its memory
    (resume point, each device's state, pinhole and policy) is ``state_file``, JSON."""

    def __init__(self, session: aiohttp.ClientSession, server: str,
                 state_file: Path | None = None) -> None:  # fmt: skip
        self.session, self.server, self.state_file = session, server.rstrip("/"), state_file
        self.last_event_id, self.devices = 0, dict[str, Device]()
        if state_file is not None and state_file.exists():
            try:
                with state_file.open("rb") as fh:
                    doc = json.loads(fh.read(16 * _MAX_EVENT))
                self.last_event_id = int(doc["last_event_id"])
                self.devices = {name: parse_device(n) for name, n in doc["devices"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError, SimError) as exc:
                raise SimError(f"state file {state_file} is unusable: {exc!r:.200}") from exc

    def _save(self) -> None:
        if self.state_file is None:
            return
        devices = {name: device.as_json() for name, device in self.devices.items()}
        text = json.dumps({"last_event_id": self.last_event_id, "devices": devices}, indent=2)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, self.state_file)  # readers see the old file or the new, never half

    async def _call(self, method: str, path: str, body: object = None) -> Device:
        async with self.session.request(method, self.server + path, json=body) as resp:
            status, data = resp.status, await resp.content.read(_MAX_EVENT)
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if status >= 400:
            detail = doc.get("detail") if isinstance(doc, dict) else data[:200]
            raise SimError(f"{method} {path}: HTTP {status}: {detail!s}")
        return parse_device(doc)

    def _remember(self, device: Device) -> Device:  # keep the pinhole until it is left
        old = self.devices.get(device.device_id, device)
        aces = (device.aces or old.aces) if device.policy == "pinhole" else ()
        device = dataclasses.replace(device, mud_url=device.mud_url or old.mud_url, aces=aces)
        self.devices[device.device_id] = device
        self._save()
        return device

    def _show(self, device: Device) -> Device:
        device = self._remember(device)
        _say(f"{device.device_id}: {device.state}" + " (escalated)" * device.escalated)
        if device.aces:
            _say(device.pinhole())
        return device

    async def claim(self, device_id: str, claim_code: str) -> Device:
        body = {"device_id": device_id, "claim_code": claim_code}  # the code printed on it
        return self._show(await self._call("POST", "/v1/gateway/devices", body))

    async def incident(self, device_id: str, kind: str = "scanning", times: int = 1) -> Device:
        """Report ``times`` (>= 1) incidents, 2 is "repeated": quarantined; the last answer."""
        path = f"/v1/gateway/devices/{device_id}/incidents"
        body = incident_summary(kind, time.time())  # one reference time for all of them
        views = [await self._call("POST", path, body) for _ in range(times)]
        return self._show(views[-1])

    async def state(self, device_id: str) -> Device:
        return self._show(await self._call("GET", f"/v1/gateway/devices/{device_id}"))

    async def follow(self, until: str | None = None, timeout: float | None = None) -> int:
        """Act on signals: 0 once ``until`` is reinstated (or on a timeout without it), else 1."""
        try:
            async with asyncio.timeout(timeout):
                await self._follow(until)
        except TimeoutError:
            if until is not None:
                _say(f"timed out: {until} was not reinstated")
                return 1
        return 0

    async def _follow(self, until: str | None) -> None:
        url, failures = self.server + "/v1/gateway/events", 0
        while failures < _MAX_FAILURES:
            headers = {"Last-Event-ID": str(self.last_event_id)} if self.last_event_id else {}
            try:
                async with self.session.get(url, headers=headers, timeout=_STREAM_TIMEOUT) as resp:
                    if resp.status != 200:  # a refusal (token, Last-Event-ID): retrying cannot help
                        raise SimError(f"GET /v1/gateway/events: HTTP {resp.status}")
                    failures, parser = 0, SseParser()
                    while raw := await resp.content.readline():
                        event = parser.feed(raw.decode(errors="replace").rstrip("\r\n"))
                        if event is not None and await self._handle(event, until):
                            return
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: long line
                failures += 1
                _say(f"stream lost ({exc!r:.200}); reconnecting")
            await asyncio.sleep(2)  # the service's "retry: 2000"; a fixed delay is enough here
        raise SimError(f"no event stream after {_MAX_FAILURES} attempts")

    async def _handle(self, event: SseEvent, until: str | None) -> bool:
        """Act on one event, then resume after it; True once ``until`` is reinstated."""
        try:
            done = await self._act(event, until)
        except SimError as exc:  # not a signal, or the service refused (escalated, replayed)
            _say(f"  {exc}")
            done = False
        if event.id.isdigit():  # not reached when the connection broke: the event comes again
            self.last_event_id = int(event.id)
        self._save()
        return done

    async def _act(self, event: SseEvent, until: str | None) -> bool:
        try:  # the signal document (docs/service.md "Gateway events")
            doc = json.loads(event.data)
            device = parse_device({"device_id": doc["device_id"], "state": "", **doc["payload"]})
            when = datetime.fromtimestamp(float(doc["created_at"]), UTC)
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise SimError(f"event {event.id or '?'} is not a signal: {exc!r:.200}") from exc
        name, kind = device.device_id, event.event
        _say(f"{when:%Y-%m-%dT%H:%M:%SZ}  {name}  {kind}  {device.state}"
             + "  escalated" * device.escalated)  # fmt: skip
        if kind == "reinstatement-ready":
            device = await self._call("POST", f"/v1/gateway/devices/{name}/reinstatement")
            _say(f"  lifted quarantine for {name}")
        device = self._remember(device)
        if kind == "reinstated":
            _say(f"  full MUD policy applies again for {name}: {device.mud_url}")
        elif kind != "reinstatement-ready":
            _say(f"  {device.pinhole()}" if device.aces else f"  policy: {device.policy}")
        return kind == "reinstated" and name == until


async def _main(args: argparse.Namespace) -> int:
    tls = ssl.create_default_context(cafile=args.cafile) if args.cafile else True
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {args.token}"}, timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(ssl=tls, limit=4),
    ) as session:  # fmt: skip
        sim = GatewaySim(session, args.server, Path(args.state_file) if args.state_file else None)
        if args.action == "follow":
            return await sim.follow(args.until_reinstated, args.timeout)
        if args.action == "claim":
            await sim.claim(args.device, args.claim_code)
        elif args.action == "incident":
            await sim.incident(args.device, args.kind, args.times)
        else:
            await sim.state(args.device)
    return 0


def _run(args: argparse.Namespace) -> int:
    if not args.server.startswith(("http://", "https://")):
        raise UsageError("--server: give http(s)://HOST[:PORT]")
    if args.cafile and not Path(args.cafile).is_file():
        raise UsageError(f"--cafile: no such file: {args.cafile}")
    if getattr(args, "timeout", None) is not None and not 0 < args.timeout <= 86400:
        raise UsageError("--timeout: give 0 < SECONDS <= 86400")
    try:
        return asyncio.run(_main(args))
    except (SimError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(f"suitsrv gateway-sim: {exc or type(exc).__name__}", file=sys.stderr)
    except KeyboardInterrupt:  # ^C ends a follow without a traceback
        pass
    return 1


def add_gateway_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("gateway-sim", help="a simulated home gateway (docs/gateway-sim.md)")
    parser.add_argument("--server", required=True, metavar="URL")
    parser.add_argument("--token", required=True, help="a gateway token")
    parser.add_argument("--cafile", metavar="PEM", help="trust this CA for https")
    parser.add_argument("--state-file", metavar="FILE", help="JSON memory: pinholes, resume id")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    claim = actions.add_parser("claim", help="claim a device with the code printed on it")
    claim.add_argument("device")
    claim.add_argument("--claim-code", required=True, metavar="CODE")
    incident = actions.add_parser("incident", help="report an incident summary")
    incident.add_argument("device")
    incident.add_argument("--kind", default="scanning", help="scanning, malware, exfiltration, …")
    incident.add_argument("--times", type=int, choices=range(1, 11), default=1, metavar="1..10")
    follow = actions.add_parser("follow", help="follow the signals and act on them")
    follow.add_argument("--until-reinstated", metavar="DEVICE", help="exit 0 once reinstated")
    follow.add_argument("--timeout", type=float, metavar="SECONDS", help="exit 1 when it ends")
    actions.add_parser("state", help="a device's state and pinhole").add_argument("device")
    parser.set_defaults(run=_run)
