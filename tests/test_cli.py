"""The suitsrv CLI as a user runs it: keygen, manifest build / inspect / verify / sever."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from suitsrv.cli.main import main

SPEC = """
vendor-domain = "example.com"
class-name = "thermostat-v2"
sequence-number = 3
version = "1.2.0"
severable = ["text"]

[text]
description = "Thermostat firmware"

[[component]]
id = ["firmware"]
file = "fw.bin"
uri = "https://fw.example.com/t/1.2.0.bin"
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fw.bin").write_bytes(os.urandom(3000))
    (tmp_path / "spec.toml").write_text(SPEC)
    assert main(["keygen", "--alg", "ES256", "-o", "vendor"]) == 0
    assert (
        main(["manifest", "build", "spec.toml", "--key", "vendor.priv.pem", "-o", "out.suit"]) == 0
    )
    return tmp_path


def test_keygen_protects_the_private_key(workdir: Path) -> None:
    mode = stat.S_IMODE((workdir / "vendor.priv.pem").stat().st_mode)
    assert mode == 0o600
    assert main(["keygen", "-o", "vendor"]) == 2  # refuses to overwrite


def test_verify_accepts_and_reports_identity(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["manifest", "verify", "out.suit", "--trust", "vendor.pub.pem", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accepted"] is True and result["reason"] is None
    assert result["sequence_number"] == 3
    assert result["vendor_id"] == "cfbff0d1-9375-5685-968c-48ce8b15ae17"  # UUID5(DNS, example.com)
    assert len(result["digest"]) == 64 and result["class_id"]


def test_verify_rejects_with_one_line(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--alg", "EdDSA", "-o", "other"]) == 0
    capsys.readouterr()
    assert main(["manifest", "verify", "out.suit", "--trust", "other.pub.pem"]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("rejected: ")
    data = bytearray((workdir / "out.suit").read_bytes())
    data[-10] ^= 0xFF
    (workdir / "bad.suit").write_bytes(bytes(data))
    assert main(["manifest", "verify", "bad.suit", "--trust", "vendor.pub.pem", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["accepted"] is False and result["reason"]


@pytest.mark.parametrize(
    "argv",
    [
        ["manifest", "verify", "out.suit"],
        ["manifest", "verify", "missing.suit", "--trust", "vendor.pub.pem"],
        ["manifest", "verify", "out.suit", "--trust", "fw.bin"],
        ["manifest", "verify", "out.suit", "--mac-key", "zz"],
        ["manifest", "build", "spec.toml", "-o", "x.suit"],
        ["manifest", "build", "missing.toml", "--key", "vendor.priv.pem", "-o", "x.suit"],
    ],
)
def test_usage_errors_exit_2(workdir: Path, argv: list[str]) -> None:
    assert main(argv) == 2


def test_argparse_usage_errors_exit_2(workdir: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["manifest", "verify"])
    assert info.value.code == 2


def test_bad_spec_is_a_clear_failure(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "bad.toml").write_text(SPEC.replace("sequence-number = 3", "sequence-number = -1"))
    capsys.readouterr()
    assert main(["manifest", "build", "bad.toml", "--key", "vendor.priv.pem", "-o", "x.suit"]) == 1
    assert "sequence-number" in capsys.readouterr().err
    assert not (workdir / "x.suit").exists()


def test_inspect_and_sever(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["manifest", "inspect", "out.suit", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["members"]["text"]["state"] == "in envelope"
    assert view["components"][0]["uris"] == ["https://fw.example.com/t/1.2.0.bin"]
    assert main(["manifest", "sever", "out.suit", "-o", "small.suit"]) == 0
    capsys.readouterr()
    assert main(["manifest", "inspect", "small.suit", "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["members"]["text"]["state"] == "severed (absent)"
    assert small["manifest_digest"] == view["manifest_digest"]
    assert main(["manifest", "verify", "small.suit", "--trust", "vendor.pub.pem"]) == 0


def test_console_script_runs(workdir: Path) -> None:
    exe = Path(sys.executable).with_name("suitsrv")
    done = subprocess.run(
        [str(exe), "manifest", "verify", "out.suit", "--trust", "vendor.pub.pem"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("accepted: sequence number 3")


def test_public_vector_with_the_draft_key(
    suit_vectors: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    envelope = suit_vectors / "manifest-draft37" / "example0.signed.cbor"
    key = suit_vectors / "keys" / "draft-example-p256.pub.pem"
    assert main(["manifest", "verify", str(envelope), "--trust", str(key), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["digest"] == "6658ea560262696dd1f13b782239a064da7c6c5cbaf52fded428a6fc83c7e5af"
    assert result["class_id"] == "1492af14-2569-5e48-bf42-9b2d51f2ab45"
