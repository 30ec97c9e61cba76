"""The service as a new user meets it: the console scripts ``suitsrv serve``, ``suitsrv admin``,
``suitsrv keygen``, ``suitsrv manifest build`` and ``suitsrv upload``, each a real subprocess,
and a device polling over plain HTTP."""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

from manifests import parse_envelope

from .server_process import ServerProcess, run_cli

SPEC = """
vendor-domain = "example.com"
class-name = "thermostat-v2"
sequence-number = {sequence}
version = "1.{sequence}.0"
[[component]]
id = ["firmware"]
file = "fw.bin"
uri = "https://fw.example.com/thermostat/1.{sequence}.0.bin"
"""


def http_get(
    url: str, token: str, headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    """GET with a bearer token; (status, headers, body) for every status, 304 and 4xx too."""
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def shown_once(output: str, prefix: str) -> str:
    """The one ``sst_`` token on the line that starts with ``prefix``."""
    found = re.findall(rf"^{re.escape(prefix)}.*\(shown once[^)]*\): (sst_\S+)$", output, re.M)
    assert len(found) == 1, output
    return str(found[0])


def test_first_start_prints_the_operator_token_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess.start(data, tmp_path) as server:
        assert len(server.operator_tokens()) == 1
        token = shown_once(server.stdout(), "operator token")
        assert f"suitsrv serving {server.url}" in server.stdout()
        assert "allow-resettable-pcrs" not in server.stderr()  # the product default
        status, _, body = http_get(f"{server.url}/v1/operator/vendors", token)
        assert (status, json.loads(body)) == (200, {"vendors": []})
        assert server.stop() == 0

    with ServerProcess.start(data, tmp_path) as server:
        assert server.operator_tokens() == []
        assert "token" not in server.stdout()
        status, _, _ = http_get(f"{server.url}/v1/operator/vendors", token)
        assert status == 200  # the token printed at the first start still works
        assert server.stop() == 0

    init = run_cli("admin", "--data-dir", str(data), "init")
    assert init.returncode == 1, init.stderr
    assert "an operator token exists already" in init.stdout
    assert "sst_" not in init.stdout + init.stderr


def test_vendor_publishes_and_device_receives(tmp_path: Path) -> None:
    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()

    def admin(*args: str) -> str:
        done = run_cli("admin", "--data-dir", str(data), *args, cwd=work)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def build(sequence: int, name: str) -> Path:
        (work / "spec.toml").write_text(SPEC.format(sequence=sequence))
        done = run_cli(
            "manifest", "build", "spec.toml", "--key", "vendor.priv.pem", "-o", name, cwd=work
        )
        assert done.returncode == 0, done.stderr
        return work / name

    keygen = run_cli("keygen", "-o", "vendor", cwd=work)
    assert keygen.returncode == 0, keygen.stderr
    vendor = json.loads(
        admin("vendor", "add", "acme", "--vendor-domain", "example.com",
              "--trust", "vendor.pub.pem")
    )  # fmt: skip
    assert vendor["name"] == "acme" and len(vendor["anchors"]) == 1
    issued = admin("token", "issue", "--role", "vendor", "--scope", "acme")
    vendor_token = shown_once(issued, "token")
    device_token = shown_once(
        admin("device", "add", "dev-1", "--vendor", "acme", "--class-name", "thermostat-v2"),
        "device dev-1",
    )
    # The EK as `suitsrv agent identity --json` prints it, for AK enrollment; base64 checked.
    admin("device", "add", "dev-ek", "--vendor", "acme", "--class-name", "thermostat-v2",
          "--ek-public", "AAAA")  # fmt: skip
    bad = run_cli("admin", "--data-dir", str(data), "device", "add", "dev-x", "--vendor",
                  "acme", "--class-name", "x", "--ek-public", "not base64!", cwd=work)  # fmt: skip
    assert bad.returncode == 2 and "not base64" in bad.stderr
    firmware = os.urandom(300_000)
    (work / "fw.bin").write_bytes(firmware)
    envelope = build(2, "fw.suit").read_bytes()
    digest = parse_envelope(envelope).digest.hex
    build(1, "old.suit")

    with ServerProcess.start(data, tmp_path) as server:
        assert len(server.operator_tokens()) == 1
        update = f"{server.url}/v1/device/update"
        assert http_get(update, device_token)[0] == 204  # nothing released yet

        upload = run_cli(
            "upload", "--server", server.url, "--token", vendor_token, "--progress",
            "fw.suit", "fw.bin", cwd=work,
        )  # fmt: skip
        assert upload.returncode == 0, upload.stderr
        assert upload.stdout == f"manifest {digest} sequence 2: published\n"
        assert re.search(r"fw\.bin +\[#{20}\] 100\.0% +[0-9.]+ MiB/s\n", upload.stderr), (
            upload.stderr
        )

        status, headers, body = http_get(update, device_token)
        assert status == 200 and body == envelope
        assert headers["ETag"] == f'"{digest}"' and headers["Suit-Sequence-Number"] == "2"
        assert http_get(update, device_token, {"If-None-Match": f'"{digest}"'})[0] == 304
        sha = hashlib.sha256(firmware).hexdigest()
        status, _, payload = http_get(f"{server.url}/v1/payloads/{sha}", device_token)
        assert status == 200 and payload == firmware

        rollback = run_cli(
            "upload", "--server", server.url, "--token", vendor_token, "old.suit", "fw.bin",
            cwd=work,
        )  # fmt: skip
        assert rollback.returncode == 1
        assert rollback.stdout == ""
        lines = rollback.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rejected: HTTP 409"), rollback.stderr
        status, _, body = http_get(update, device_token)
        assert status == 200 and body == envelope  # the device still gets sequence 2
        assert server.stop() == 0


def _self_signed(directory: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_serve_over_tls(tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    with ServerProcess.start(
        tmp_path / "data", tmp_path, extra=["--tls-cert", str(cert), "--tls-key", str(key)]
    ) as server:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"{server.url}/healthz", context=context, timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
