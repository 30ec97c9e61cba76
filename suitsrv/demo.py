"""The end-to-end demo (docs/demo.md): a service, a gateway and two devices, each with its own
swtpm, through the quarantine story. Device A upgrades to the fixed release, attests, gets its
pre-incident configuration back and is reinstated; device B's installed image is tampered with,
so it attests contraindicated and stays quarantined. Every actor is a real ``suitsrv`` process
talking HTTP on 127.0.0.1; this module only starts them, in order, and checks the outcome.

Exit status: 0 when A ended nominal and B quarantined, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from .demo_procs import DemoFailed, Processes, child_env, free_port, listening, wait_for

__all__ = ["SIMULATION_CONFIG", "DemoFailed", "main"]

SUITSRV: Final = Path(sys.executable).with_name("suitsrv")
SWTPM: Final = shutil.which("swtpm") or "swtpm"
CLASS_NAME: Final = "thermostat-v2"
SETTINGS: Final = "wifi=home\nadmin=alice\n"
SIMULATION_CONFIG: Final = """\
# swtpm devices measure into PCR 16 (resettable by software): let such images affirm.
[attestation]
allow-resettable-pcrs = true
"""
_TOKEN = re.compile(r"(sst_\S+)")
_OPERATOR_LINE = re.compile(r"operator token \(shown once, store it now\): (sst_\S+)")


@dataclass
class Device:
    """One simulated device: its swtpm, agent.toml, configuration file and claim code."""

    name: str
    device_id: str
    folder: Path
    claim_code: str = field(default_factory=lambda: secrets.token_hex(6).upper())
    registered: bool = False

    @property
    def toml(self) -> Path:
        return self.folder / "agent.toml"

    @property
    def config_file(self) -> Path:
        return self.folder / "device.conf"

    def slot_images(self) -> list[Path]:
        """The images of the boot slot (agent state layout, docs/agent.md)."""
        state = self.folder / "state"
        current = state / "current"
        slot = current.read_text().strip() if current.exists() else "a"
        return sorted((state / f"slot-{slot}").glob("*.img"))


class Demo:
    """The story, one ``suitsrv`` command at a time; each is printed with its output."""

    def __init__(self, root: Path, procs: Processes, tag: str) -> None:
        self.root, self.procs, self.tag = root, procs, tag
        self.server = ""
        self.operator = ""
        self.data_dir: Path | None = None
        self.server_proc: subprocess.Popen[bytes] | None = None
        self.vendor = f"acme{tag}"
        self.tokens: dict[str, str] = {}
        self.devices = [
            Device(n, f"thermostat-{n.lower()}{tag}", root / f"device-{n}") for n in ("A", "B")
        ]

    # --- running commands ----------------------------------------------------------------

    def suitsrv(self, *args: str, ok: Sequence[int] = (0,)) -> str:
        shown = " ".join(args).replace(str(self.root), "$DEMO")
        for role, token in self.tokens.items():  # printed once, when issued
            shown = shown.replace(token, f"${role.upper()}_TOKEN")
        print(f"$ suitsrv {shown}", flush=True)
        done = subprocess.run([str(SUITSRV), *args], capture_output=True, text=True,
                              env=child_env(), timeout=120, check=False)  # fmt: skip
        for line in (done.stdout + done.stderr).splitlines():
            print(f"    {line}", flush=True)
        if done.returncode not in ok:
            raise DemoFailed(f"`suitsrv {shown}` exited {done.returncode}")
        return done.stdout

    def gateway(self, *args: str, ok: Sequence[int] = (0,)) -> str:
        return self.suitsrv(
            "gateway-sim", "--server", self.server, "--token", self.tokens["gateway"], *args, ok=ok
        )

    def agent(self, dev: Device, *args: str, ok: Sequence[int] = (0,)) -> str:
        return self.suitsrv("agent", "--config", str(dev.toml), *args, ok=ok)

    def http(self, method: str, path: str, body: object = None) -> Any:
        """One operator request; the JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.operator}", "Content-Type": "application/json"}
        # --server is checked to be http(s):// (_parse); nothing else reaches urlopen.
        req = urllib.request.Request(self.server + path, data, headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise DemoFailed(f"{method} {path}: {exc.code} {exc.read()[:300]!r}") from exc

    # --- the service and accounts --------------------------------------------------------

    def start_server(self) -> None:
        self.data_dir = self.root / "server"
        port = free_port()
        log = self.root / "server.log"
        # The devices are swtpm simulations whose agents measure into PCR 16, which software
        # can reset: a product measures from boot code into a PCR it cannot, and keeps the
        # default (false). The demo says so in its server's configuration (ADR 0006).
        config = self.root / "suitsrv.toml"
        config.write_text(SIMULATION_CONFIG)
        # Its own session: with --keep-running it outlives us and a later Ctrl-C.
        argv = [str(SUITSRV), "serve", "--config", str(config), "--data-dir", str(self.data_dir),
                "--listen", f"127.0.0.1:{port}"]  # fmt: skip
        proc = self.procs.start(argv, log, start_new_session=True)

        def ready() -> bool:
            return "suitsrv serving" in log.read_text(errors="replace") and listening(port)

        self.server_proc = proc
        wait_for("suitsrv serve", ready, proc, log)
        found = _OPERATOR_LINE.search(log.read_text())
        if found is None:
            raise DemoFailed("the server printed no operator token")
        self.server, self.operator = f"http://127.0.0.1:{port}", found.group(1)
        print(f"service: {self.server} (pid {proc.pid}, log $DEMO/server.log)")

    def setup_accounts(self) -> None:
        keys = self.root / "vendor"
        keys.mkdir()
        self.suitsrv("keygen", "-o", str(keys / "vendor"))
        pem = (keys / "vendor.pub.pem").read_text()
        domain = f"{self.vendor}.example"
        if self.data_dir is not None:  # our own server: the operator's offline admin CLI
            d = ("admin", "--data-dir", str(self.data_dir))
            self.suitsrv(*d, "vendor", "add", self.vendor, "--vendor-domain", domain,
                         "--trust", str(keys / "vendor.pub.pem"))  # fmt: skip
            for role, scope in (("vendor", self.vendor), ("gateway", f"gw-home{self.tag}")):
                out = self.suitsrv(*d, "token", "issue", "--role", role, "--scope", scope)
                self.tokens[role] = _token_in(out)
        else:  # someone else's server: the operator HTTP API
            print(f"POST /v1/operator/vendors {self.vendor}")
            vendor = {"name": self.vendor, "vendor_domains": [domain], "anchors": [{"pem": pem}]}
            self.http("POST", "/v1/operator/vendors", vendor)
            for role, scope in (("vendor", self.vendor), ("gateway", f"gw-home{self.tag}")):
                print(f"POST /v1/operator/tokens role={role} scope={scope}")
                answer = self.http("POST", "/v1/operator/tokens", {"role": role, "scope": scope})
                self.tokens[role] = str(answer["token"])

    def provision(self, dev: Device) -> None:
        """Start the device's swtpm, read its EK and register it with a claim code."""
        dev.folder.mkdir()
        port = free_port(pair=True)
        log = dev.folder / "swtpm.log"
        (dev.folder / "tpm").mkdir()
        # As in tests/swtpm.py: already started up, so the agent is the TPM's only user.
        proc = self.procs.start(
            [SWTPM, "socket", "--tpm2",
             "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
             "--tpmstate", f"dir={dev.folder / 'tpm'}", "--flags", "not-need-init,startup-clear"],
            log,
        )  # fmt: skip
        wait_for("swtpm", lambda: listening(port), proc, log)
        shutil.copy(self.root / "vendor" / "vendor.pub.pem", dev.folder / "vendor.pub.pem")
        token_file = dev.folder / "device.token"
        token_file.write_text("sst_not_registered_yet\n")  # identity needs no token
        dev.config_file.write_text(SETTINGS)
        dev.toml.write_text(
            f'server = "{self.server}"\ndevice-id = "{dev.device_id}"\n'
            f'token-file = "device.token"\ntcti = "swtpm:host=127.0.0.1,port={port}"\n'
            f'state-dir = "state"\nvendor-key = "vendor.pub.pem"\n'
            f'vendor-domain = "{self.vendor}.example"\nclass-name = "{CLASS_NAME}"\n'
            f'config-file = "device.conf"\n'
        )
        ek = json.loads(self.agent(dev, "identity", "--json"))["ek_public"]
        if self.data_dir is not None:
            out = self.suitsrv("admin", "--data-dir", str(self.data_dir), "device", "add",
                               dev.device_id, "--vendor", self.vendor, "--class-name", CLASS_NAME,
                               "--ek-public", ek, "--claim-code", dev.claim_code)  # fmt: skip
            token = _token_in(out)
        else:
            print(f"POST /v1/operator/devices {dev.device_id}")
            body = {"device_id": dev.device_id, "vendor": self.vendor, "class_name": CLASS_NAME,
                    "claim_code": dev.claim_code, "keys": {"ek_public": ek}}  # fmt: skip
            token = str(self.http("POST", "/v1/operator/devices", body)["token"])
        token_file.write_text(token + "\n")
        dev.registered = True

    # --- releases ------------------------------------------------------------------------

    def publish(self, sequence: int) -> None:
        folder = self.root / f"release-{sequence}"
        folder.mkdir()
        (folder / "fw.bin").write_bytes(os.urandom(96 << 10))
        (folder / "spec.toml").write_text(
            f'vendor-domain = "{self.vendor}.example"\nclass-name = "{CLASS_NAME}"\n'
            f'sequence-number = {sequence}\nversion = "{sequence}.0.0"\n'
            f'[[component]]\nid = ["firmware"]\nfile = "fw.bin"\n'
            f'uri = "https://fw.{self.vendor}.example/thermostat/{sequence}.0.0.bin"\n'
        )
        envelope = str(folder / "fw.suit")
        key = str(self.root / "vendor" / "vendor.priv.pem")
        self.suitsrv("manifest", "build", str(folder / "spec.toml"), "--key", key, "-o", envelope)
        self.suitsrv("upload", "--server", self.server, "--token", self.tokens["vendor"],
                     envelope, str(folder / "fw.bin"))  # fmt: skip

    # --- checks --------------------------------------------------------------------------

    def timeline(self, dev: Device) -> dict[str, Any]:
        path = f"/v1/operator/devices/{dev.device_id}/timeline?limit=1000"
        answer: dict[str, Any] = self.http("GET", path)
        return answer

    def show_timelines(self) -> None:
        for dev in self.devices:
            if dev.registered:
                self._show_timeline(dev)

    def _show_timeline(self, dev: Device) -> None:
        print(f"\n== timeline of device {dev.name} ({dev.device_id})")
        if self.data_dir is not None:
            d = str(self.data_dir)
            self.suitsrv("admin", "--data-dir", d, "timeline", dev.device_id, ok=(0, 1, 2))
            return
        view = self.timeline(dev)
        for e in view["events"]:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e["at"]))
            what = e.get("event") or (e.get("detail") or {}).get("kind", "")
            moved = f"{e.get('from_state')} -> {e.get('to_state')}" if e.get("to_state") else ""
            print(f"    {at}  {e['kind']:<10} {what:<26} {moved:<40} {e['actor']}")
        print(f"    next: {view.get('next_step')}")


def _token_in(output: str) -> str:
    found = _TOKEN.search(output)
    if found is None:
        raise DemoFailed(f"no token in: {output.strip()}")
    return found.group(1)


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def story(demo: Demo) -> None:
    """From registration to the two outcomes; raises DemoFailed when a step goes wrong."""
    _step("manufacturer: vendor key, accounts and the two devices (one swtpm each)")
    demo.setup_accounts()
    for dev in demo.devices:
        demo.provision(dev)
    _step("release 1; the gateway claims both devices; they enroll, install it and attest")
    demo.publish(1)
    for dev in demo.devices:
        demo.gateway("claim", dev.device_id, "--claim-code", dev.claim_code)
        for step in ("enroll", "poll", "attest", "backup"):  # backup: worth restoring later
            demo.agent(dev, step)
    follow_log = demo.root / "gateway-follow.log"
    follower = demo.procs.start(
        [str(SUITSRV), "gateway-sim", "--server", demo.server, "--token", demo.tokens["gateway"],
         "--state-file", str(demo.root / "gateway.json"),
         "follow", "--until-reinstated", demo.devices[0].device_id, "--timeout", "180"],
        follow_log,
    )  # fmt: skip
    _step("the gateway sees both misbehave (a repeated incident): quarantined")
    for dev in demo.devices:
        demo.gateway("incident", dev.device_id, "--times", "2")
        dev.config_file.write_text("wifi=home\nadmin=mallory\n")  # what the intruder left
    _step("the vendor publishes the fixed release 2")
    demo.publish(2)
    _reinstate(demo, follower, follow_log)
    _tamper(demo)


def _reinstate(demo: Demo, follower: subprocess.Popen[bytes], follow_log: Path) -> None:
    a = demo.devices[0]
    _step(f"device A ({a.device_id}) upgrades through the pinhole, attests, restores")
    for step in ("poll", "attest", "restore"):
        demo.agent(a, step)
    print(f"    device.conf now: {a.config_file.read_text().strip()!r}")
    _step("the gateway acknowledges A's reinstatement (gateway-sim follow, in the background)")
    try:
        code = follower.wait(120)
    except subprocess.TimeoutExpired:
        code = None
    demo.procs.stop(follower)
    for line in follow_log.read_text(errors="replace").splitlines():
        print(f"    {line}")
    if code != 0:
        raise DemoFailed(f"gateway-sim follow exited {code}")


def _tamper(demo: Demo) -> None:
    b = demo.devices[1]
    _step(f"device B ({b.device_id}) upgrades, but its installed image is tampered with")
    demo.agent(b, "poll")  # installs into the inactive slot, boots (measures) and reports
    for image in b.slot_images():
        image.write_bytes(b"\x90" * 1024 + image.read_bytes()[1024:])
        print(f"    tampered: $DEMO/{image.relative_to(demo.root)}")
    demo.agent(b, "boot")  # the device restarts and measures what is now in its slot
    demo.agent(b, "attest", ok=(1,))  # not affirming: exit 1 is the expected outcome


def check(demo: Demo) -> list[str]:
    """What went wrong, if anything: A nominal with its configuration back, B quarantined."""
    a, b = demo.devices
    problems = []
    va, vb = demo.timeline(a), demo.timeline(b)
    if va["state"] != "nominal":
        problems.append(f"device A is {va['state']}, expected nominal")
    if a.config_file.read_text() != SETTINGS:
        problems.append("device A did not get its pre-incident configuration back")
    if vb["state"] != "quarantined":
        problems.append(f"device B is {vb['state']}, expected quarantined")
    if not any(e.get("event") == "attestation-failed" for e in vb["events"]):
        problems.append("device B's timeline has no attestation-failed")
    print("\n== outcome")
    print(f"    device A {a.device_id}: {va['state']}, configuration restored")
    escalated = " (escalated)" if vb["escalated"] else ""
    print(f"    device B {b.device_id}: {vb['state']}{escalated}")
    return problems


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-running", action="store_true",
                        help="leave the service up; print its URL and token")  # fmt: skip
    parser.add_argument("--server", metavar="URL",
                        help="use this service instead of starting one (its [attestation] must "
                             "allow-resettable-pcrs: the devices measure into PCR 16)")  # fmt: skip
    parser.add_argument("--operator-token", metavar="T", help="its operator token (with --server)")
    args = parser.parse_args(argv)
    if (args.server is None) != (args.operator_token is None):
        parser.error("--server and --operator-token go together")
    if args.server is not None and args.keep_running:
        parser.error("--keep-running applies to the service the demo starts")
    if args.server is not None and not re.match(r"https?://", args.server):
        parser.error("--server must be an http:// or https:// URL")
    return args


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, root: Path, procs: Processes) -> int:
    demo = Demo(root, procs, "" if args.server is None else f"-{secrets.token_hex(3)}")
    if args.server is None:
        demo.start_server()
    else:
        demo.server, demo.operator = args.server.rstrip("/"), args.operator_token
    try:
        try:
            story(demo)
        except DemoFailed:
            demo.show_timelines()  # what happened up to the failure
            raise
        demo.show_timelines()
        problems = check(demo)
    finally:
        if args.keep_running and demo.server_proc is not None:
            procs.running.remove(demo.server_proc)  # detached: start_new_session, log to a file
            print(
                f"\nservice left running: {demo.server} (pid {demo.server_proc.pid}; "
                f"stop it with: kill {demo.server_proc.pid})"
            )
            print(f"operator token: {demo.operator}")
            print(f"data directory: {demo.data_dir}")
    if problems:
        raise DemoFailed("; ".join(problems))
    print("\ndemo: both outcomes happened: A reinstated (nominal), B quarantined")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when both outcomes happened."""
    args = _parse(argv)
    if not Path(SWTPM).is_absolute():
        print("demo: swtpm is not installed (scripts/setup installs it)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="suitsrv-demo-"))
    print(f"demo: the data lives in {root} ($DEMO below)")
    procs = Processes()
    try:
        with _sigterm_as_interrupt():
            return _run(args, root, procs)
    except DemoFailed as exc:
        print(f"\ndemo: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
