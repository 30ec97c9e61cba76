"""The device agent against a real service over 127.0.0.1 and a real swtpm: enrollment by
credential activation, update with a resumed download, verification with the provisioned
vendor key, measured boot and an affirming attestation, and the configuration round trip
through quarantine. Nothing of ours is faked; the service's clock is injected."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from tpm2_pytss import ESAPI, ESYS_TR, TPM2B_PUBLIC, TPMA_OBJECT, TPMT_PUBLIC

from manifests import (
    Algorithm,
    anchor_from_pem,
    build_manifest,
    class_id,
    generate_signing_key,
    load_spec,
    public_pem,
    sign,
    vendor_id_from_domain,
)
from manifests.numbers import ReportReason
from suitsrv import accounts, devices
from suitsrv.agent import (
    Agent,
    AgentConfig,
    AgentConfigError,
    InstallPlan,
    ManifestRefused,
    PollStatus,
    check_manifest,
    load_agent_config,
)
from suitsrv.agent.tpm import Tpm
from suitsrv.cli.main import main
from suitsrv.lifecycle import Event

from .service_fixtures import CLASS_NAME, VENDOR_DOMAIN, Service, start_service
from .swtpm import Swtpm, running_swtpm

FIRMWARE = bytes(range(256)) * 800  # 204800 bytes: several requests at 64 KiB each
CUT = 64 << 10
SETTINGS = b"wifi=home\nadmin=alice\n"


@dataclass
class Device:
    svc: Service
    config: AgentConfig
    toml: Path
    lines: list[str] = field(default_factory=list)

    def agent(self, **kwargs: Any) -> Agent:
        return Agent(self.config, say=self.lines.append, clock=self.svc.clock, **kwargs)


@pytest.fixture
def swtpm(tmp_path: Path) -> Iterator[Swtpm]:
    with running_swtpm(tmp_path / "tpm") as sw:
        yield sw


def _write_config(folder: Path, server: str, tcti: str, token: str, vendor_pem: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "vendor.pub.pem").write_bytes(vendor_pem)
    (folder / "agent-1.token").write_text(token + "\n")
    (folder / "device.conf").write_bytes(SETTINGS)
    toml = folder / "agent.toml"
    toml.write_text(f"""
server = "{server}"
device-id = "agent-1"
token-file = "agent-1.token"
tcti = "{tcti}"
state-dir = "state"
vendor-key = "vendor.pub.pem"
vendor-domain = "{VENDOR_DOMAIN}"
class-name = "{CLASS_NAME}"
config-file = "device.conf"
""")
    return toml


@pytest.fixture
async def device(tmp_path: Path, aiohttp_client: Any, swtpm: Swtpm) -> AsyncIterator[Device]:
    svc = await start_service(tmp_path, aiohttp_client)
    # The manufacturer reads the EK at the end of the line and registers it with the device.
    with Tpm.open(swtpm.tcti) as tpm:
        ek = tpm.ek_public()
    _, token = await accounts.register_device(
        svc.store, "agent-1", "acme", class_name=CLASS_NAME, gateway="gw-1",
        keys={"ek_public": base64.b64encode(ek).decode()}, now=svc.clock(),
    )  # fmt: skip
    server = str(svc.client.make_url("/")).rstrip("/")
    toml = _write_config(tmp_path / "device", server, swtpm.tcti, token, public_pem(svc.vendor_key))
    yield Device(svc, load_agent_config(toml), toml)
    svc.store.close()


async def _publish(svc: Service, sequence: int, image: bytes) -> str:
    assert (await svc.upload_payload(image)).status in (200, 201)
    resp = await svc.upload_manifest(svc.envelope(sequence, image))
    assert resp.status == 201, await resp.text()
    digest: str = (await resp.json())["digest"]
    return digest


async def test_enroll_update_with_resume_and_attest(device: Device) -> None:
    svc = device.svc
    async with device.agent(max_bytes_per_request=CUT) as agent:
        assert await agent.enroll() is True
        registered = await devices.device_of(svc.store, "agent-1")
        assert base64.b64decode(registered.keys["ak_public"]) == agent.state.enrolled_ak()
        assert await agent.enroll() is False  # remembered: no second credential challenge

        assert (await agent.poll_once()).status is PollStatus.NONE
        digest = await _publish(svc, 5, FIRMWARE)
        result = await agent.poll_once()
        assert result.status is PollStatus.INSTALLED and result.slot == "b", device.lines
        (stats,) = result.downloads
        assert [offset for offset, _ in stats.requests] == [0, CUT, 2 * CUT, 3 * CUT]
        assert stats.resumed and sum(got for _, got in stats.requests) == len(FIRMWARE)
        assert (agent.state.slot_dir("b") / "firmware.img").read_bytes() == FIRMWARE
        assert agent.state.current_slot() == "b"
        assert any("resumed at byte 65536" in line for line in device.lines)
        assert any(line.startswith("report: success recorded") for line in device.lines)

        view = await svc.client.get("/v1/operator/devices/agent-1", headers=svc.auth(svc.operator))
        installed = (await view.json())["installed"]
        assert [(i["digest"], i["sequence_number"]) for i in installed] == [(digest, 5)]
        assert (await agent.poll_once()).status is PollStatus.NONE  # nothing newer

        verdict = await agent.attest()
        assert verdict.status == "affirming", verdict.reasons
        assert not verdict.rebooted


async def test_wrong_vendor_key_refuses_without_installing(device: Device) -> None:
    other = public_pem(generate_signing_key(Algorithm.ES256))
    config = replace(device.config, vendor_anchor=anchor_from_pem(other, name="wrong.pem"),
                     vendor_key_sha256=hashlib.sha256(other).hexdigest())  # fmt: skip
    await _publish(device.svc, 5, FIRMWARE)
    async with Agent(config, say=device.lines.append, clock=device.svc.clock) as agent:
        result = await agent.poll_once()
        assert result.status is PollStatus.REFUSED
        assert result.reason is not None and "not authentic" in result.reason
        assert not agent.state.slot_dir("b").exists() and agent.state.current_slot() == "a"
        assert not list((agent.state.root / "downloads").glob("*"))  # not a byte fetched
        assert any(line.startswith("report: failure recorded") for line in device.lines)
        # Remembered: the service answers 304 and nothing is downloaded again.
        assert (await agent.poll_once()).status is PollStatus.CURRENT
    view = await device.svc.client.get("/v1/operator/devices/agent-1",
                                       headers=device.svc.auth(device.svc.operator))  # fmt: skip
    assert (await view.json())["installed"] == []


async def test_partial_download_resumes_and_a_bad_prefix_starts_over(device: Device) -> None:
    await _publish(device.svc, 5, FIRMWARE)
    sha = hashlib.sha256(FIRMWARE).hexdigest()
    async with device.agent() as agent:
        # A download cut by a crash: the bytes so far survive in the state folder.
        agent.state.partial_path(sha).write_bytes(FIRMWARE[:100_000])
        result = await agent.poll_once()
        assert result.status is PollStatus.INSTALLED
        assert result.downloads[0].requests == ((100_000, len(FIRMWARE) - 100_000),)

        # A partial file that is not a prefix of the image: the digest catches it, the image
        # is refused (and reported) but not remembered, and the next poll starts over.
        image = FIRMWARE[::-1]
        bad = hashlib.sha256(image).hexdigest()
        await _publish(device.svc, 6, image)
        agent.state.partial_path(bad).write_bytes(b"\xff" * 1000)
        refused = await agent.poll_once()
        assert refused.status is PollStatus.REFUSED and "SHA-256" in (refused.reason or "")
        assert agent.state.current_slot() == "b"
        again = await agent.poll_once()
        assert again.status is PollStatus.INSTALLED and again.slot == "a"
        assert again.downloads[0].requests == ((0, len(image)),)


async def test_backup_and_restore_through_quarantine(device: Device) -> None:
    svc, conf = device.svc, device.config.config_file
    assert conf is not None

    async def gateway(event: Event) -> str:
        registered = await devices.device_of(svc.store, "agent-1")
        _, after = await devices.record(svc.store, svc.config, registered, event,
                                        role="gateway", actor="gw-1", now=svc.clock())  # fmt: skip
        return str(after.state)

    async with device.agent() as agent:
        await agent.enroll()
        backup = await agent.backup_config()
        assert backup.version == 1 and backup.restorable
        # The gateway takes the device under management, then isolates it.
        assert await gateway(Event.ENROLLED) == "nominal"
        assert await gateway(Event.QUARANTINE_ORDERED) == "quarantined"
        conf.write_bytes(b"wifi=home\nadmin=mallory\n")  # what an intruder left behind
        await _publish(svc, 7, FIRMWARE)
        # One cycle: the changed file cannot be backed up from quarantine; the fix installs,
        # attests affirming, and the pre-incident configuration comes back.
        assert await agent.run(once=True) is True, device.lines
    assert conf.read_bytes() == SETTINGS
    assert any(line.startswith("backup: not now") for line in device.lines)
    assert any(line.startswith("attest: affirming") for line in device.lines)
    lifecycle = await svc.store.get_lifecycle("agent-1")
    assert str(lifecycle.state) == "returning-to-service"
    assert lifecycle.verdict_affirmed and lifecycle.config_restored_or_none


async def test_attest_when_the_pcr_was_reset_boots_again(device: Device, swtpm: Swtpm) -> None:
    await _publish(device.svc, 5, FIRMWARE)
    async with device.agent() as agent:
        await agent.enroll()
        assert (await agent.poll_once()).status is PollStatus.INSTALLED
        # What a TPM restart does to PCR 16 (the state survives, the PCR starts at zero).
        with ESAPI(swtpm.tcti) as esapi:
            esapi.pcr_reset(ESYS_TR.PCR16)
        verdict = await agent.attest()
    assert verdict.rebooted and verdict.status == "affirming", verdict.reasons


async def test_run_enrolls_and_sleeps_for_the_poll_hint(device: Device) -> None:
    sleeps: list[float] = []

    class Stop(Exception):
        pass

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= 2:  # the first run sleeps twice, the second once
            raise Stop

    async with device.agent(sleep=sleep) as agent:
        with pytest.raises(Stop):
            await agent.run(max_interval=5)
        assert agent.state.enrolled_ak() is not None  # first start: enrolled
    async with device.agent(sleep=sleep) as agent:
        with pytest.raises(Stop):
            await agent.run()
    # The service's hint is 600 s with 10 % jitter; --max-interval bounds it for demos.
    assert sleeps[:2] == [5, 5] and 540 <= sleeps[2] <= 660
    assert device.lines.count("sleep: polling every 5 s") == 1


def test_leftover_transient_objects_are_flushed(swtpm: Swtpm) -> None:
    # Three objects leaked by a crashed process fill a bare swtpm's three slots.
    with ESAPI(swtpm.tcti) as esapi:
        attrs = (
            TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.SENSITIVEDATAORIGIN
        )
        template = TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.parse("ecc256:ecdsa-sha256", attrs))
        for _ in range(3):
            esapi.create_primary(None, template, ESYS_TR.OWNER)
    with Tpm.open(swtpm.tcti) as tpm:
        assert tpm.ek_public() and tpm.ak_public()
        quote = tpm.quote(b"nonce")
    assert quote.attest and len(quote.pcr_value) == 32


async def test_cli_steps_and_exit_codes(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    toml = str(device.toml)
    # The CLI runs its own event loop; the service answers from this one meanwhile.
    assert await asyncio.to_thread(main, ["agent", "--config", toml, "identity", "--json"]) == 0
    identity = json.loads(capsys.readouterr().out)
    assert identity["device_id"] == "agent-1" and base64.b64decode(identity["ek_public"])
    assert await asyncio.to_thread(main, ["agent", "--config", toml, "enroll"]) == 0
    assert "AK enrolled" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["agent", "--config", toml, "restore"]) == 1
    assert "restore: failed: restore: HTTP 409 restore-not-allowed" in capsys.readouterr().out
    # Nothing installed: the verifier has no reference values, so the verdict is no affirmation.
    assert await asyncio.to_thread(main, ["agent", "--config", toml, "attest"]) == 1
    assert "attest: " in capsys.readouterr().out


async def test_identity_needs_no_token_yet(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    # identity prints what registers the device, so it runs before any token file exists.
    (device.toml.parent / "agent-1.token").unlink()
    toml = str(device.toml)
    assert await asyncio.to_thread(main, ["agent", "--config", toml, "identity", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device_id"] == "agent-1"
    assert await asyncio.to_thread(main, ["agent", "--config", toml, "enroll"]) == 2
    assert "cannot read token file" in capsys.readouterr().err


def test_manifest_checks_refuse_what_is_not_for_this_device() -> None:
    key = generate_signing_key(Algorithm.ES256)
    anchor = anchor_from_pem(public_pem(key), name="vendor.pub.pem")
    vendor = vendor_id_from_domain(VENDOR_DOMAIN)
    ours = class_id(vendor, CLASS_NAME)
    sha = hashlib.sha256(FIRMWARE).hexdigest()

    def envelope(sequence: int, class_name: str = CLASS_NAME) -> bytes:
        spec = f"""
vendor-domain = "{VENDOR_DOMAIN}"
class-name = "{class_name}"
sequence-number = {sequence}
[[component]]
id = ["firmware"]
digest = "{sha}"
size = {len(FIRMWARE)}
uri = "https://updates.example/v1/payloads/{sha}"
"""
        return sign(build_manifest(load_spec(spec)), [key])

    def check(data: bytes, installed: bytes | None = None) -> InstallPlan:
        return check_manifest(data, anchor, vendor_id=vendor, class_id=ours, installed=installed,
                              now=0)  # fmt: skip

    plan = check(envelope(5))
    assert [(c.component_id, c.size, c.digest.hex) for c in plan.components] == [
        ((b"firmware",), len(FIRMWARE), sha)
    ]
    assert check(envelope(5), installed=envelope(5)).already_installed
    for data, installed, reason, code in (
        (envelope(5, "other-class"), None, "class-id", ReportReason.CONDITION_FAILED),
        (envelope(4), envelope(5), "rollback", ReportReason.CONDITION_FAILED),
        (b"\xa0", None, "does not parse", ReportReason.CBOR_PARSE),
    ):
        with pytest.raises(ManifestRefused, match=reason) as refused:
            check(data, installed)
        assert refused.value.code is code and refused.value.permanent


def test_config_is_checked(tmp_path: Path) -> None:
    pem = public_pem(generate_signing_key(Algorithm.ES256))
    toml = _write_config(tmp_path, "http://127.0.0.1:1", "swtpm:port=1", "sst_x", pem)
    config = load_agent_config(toml)
    assert config.state_dir == tmp_path / "state" and config.token == "sst_x"
    assert config.pcr == 16 and "sst_x" not in repr(config)
    text = toml.read_text()
    for bad, message in (
        (text + 'colour = "blue"\n', "unknown keys ['colour']"),
        (text + 'token = "sst_y"\n', "exactly one of token or token-file"),
        (text + "pcr = 7\n", "pcr must be one of (16, 23)"),
        (text.replace('"http://127.0.0.1:1"', '"ftp://x"'), "server must be an http(s) URL"),
    ):
        toml.write_text(bad)
        with pytest.raises(AgentConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[").replace("]", r"\]")):  # fmt: skip
            load_agent_config(toml)
    toml.write_text(text + 'colour = "blue"\n')
    assert main(["agent", "--config", str(toml), "boot"]) == 2
