"""The public MUD routes (suitsrv/web/mud_routes.py) over real HTTP: the served file is what
build_mud makes for the class, passes the RFC 8520 prose rules (and the YANG schema when
SUITSRV_VECTORS is set), its `.p7s` verifies with `openssl cms -verify` against the signer
certificate in the data directory, and nothing is published for a class without devices."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from suitsrv import accounts
from suitsrv.mud import (
    CERT_FILE,
    MUD_MEDIA_TYPE,
    SIGNATURE_MEDIA_TYPE,
    build_mud,
    encode_mud,
    mud_url,
    update_endpoint,
)
from suitsrv.web import create_app, mud_routes, timeline
from suitsrv.web.app import Route
from suitsrv.web.routes import all_routes

from . import test_mud as mud_checks
from .service_fixtures import CLASS_NAME, Service, start_service

# The YANG data model test_mud builds (skips without SUITSRV_VECTORS), as a fixture here too.
data_model = mud_checks.data_model


def with_new_routes() -> list[Route]:
    """The service's table plus this change's routes, whether or not routes.py has them yet."""
    table = all_routes()
    known = {(r.method, r.path) for r in table}
    new = [*mud_routes.routes(), *timeline.routes()]
    return table + [r for r in new if (r.method, r.path) not in known]


async def serve_new_routes(svc: Service, aiohttp_client: Any) -> None:
    app = create_app(svc.config, svc.store, routes=with_new_routes(), clock=svc.clock,
                     rng=random.Random(7))  # fmt: skip
    svc.client = await aiohttp_client(app)


@pytest.fixture
async def svc(tmp_path: Path, aiohttp_client: Any) -> AsyncIterator[Service]:
    service = await start_service(tmp_path, aiohttp_client)
    await serve_new_routes(service, aiohttp_client)
    # The signer certificate is valid from the service clock's "now": a gateway (openssl here)
    # checks it at the real time, so this service runs on the real one.
    service.clock.now = time.time()
    yield service
    service.store.close()


async def class_of(svc: Service) -> tuple[str, float]:
    device = await svc.store.get_device("dev-1")
    assert device is not None
    return device.class_id, device.created_at


async def fetch(svc: Service, path: str, **headers: str) -> tuple[int, Mapping[str, str], bytes]:
    """(status, headers, body) of a GET without credentials (the routes are public)."""
    resp = await svc.client.get(path, headers=headers)
    return resp.status, resp.headers, await resp.read()


async def test_served_file_is_the_class_policy(svc: Service) -> None:
    class_id, registered = await class_of(svc)
    url = mud_url(svc.config.base_url, "acme", class_id)
    status, headers, body = await fetch(svc, f"/v1/mud/acme/{class_id}.json")
    assert status == 200, body
    assert headers["Content-Type"] == MUD_MEDIA_TYPE
    assert headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert headers["Cache-Control"] == "max-age=172800"  # cache-validity 48 h
    policy = mud_routes.mud_policy(svc.config, "acme", class_id, registered)
    assert body == encode_mud(build_mud(policy))
    assert json.loads(body) == build_mud(policy)
    assert mud_checks.prose_violations(json.loads(body), url) == []
    mud = json.loads(body)["ietf-mud:mud"]
    assert mud["mud-url"] == url and mud["mud-signature"] == url + ".p7s"
    assert mud["last-update"] == datetime.fromtimestamp(registered, UTC).isoformat("T", "seconds")
    assert (policy.update_host, policy.update_port) == update_endpoint(svc.config.base_url)


async def test_served_file_is_schema_valid(svc: Service, data_model: Any) -> None:
    class_id, _ = await class_of(svc)
    status, _, body = await fetch(svc, f"/v1/mud/acme/{class_id}.json")
    assert status == 200
    mud_checks.validate(data_model, json.loads(body))


async def test_signature_verifies_with_openssl(svc: Service, tmp_path: Path) -> None:
    class_id, _ = await class_of(svc)
    _, _, document = await fetch(svc, f"/v1/mud/acme/{class_id}.json")
    status, headers, signature = await fetch(svc, f"/v1/mud/acme/{class_id}.json.p7s")
    assert status == 200
    assert headers["Content-Type"] == SIGNATURE_MEDIA_TYPE
    assert headers["ETag"] == f'"{hashlib.sha256(signature).hexdigest()}"'
    (tmp_path / "class.json").write_bytes(document)
    (tmp_path / "class.json.p7s").write_bytes(signature)
    ca = svc.config.data_dir / mud_routes.MUD_KEY_DIR / CERT_FILE
    cert = x509.load_pem_x509_certificate(ca.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == update_endpoint(svc.config.base_url)[0] == "updates.example"
    for binary in (True, False):
        done = mud_checks.openssl_verify(
            tmp_path / "class.json.p7s", tmp_path / "class.json", ca, binary=binary
        )
        assert done.returncode == 0, done.stderr
    (tmp_path / "other.json").write_bytes(document.replace(b"acme", b"acmf", 1))
    tampered = mud_checks.openssl_verify(
        tmp_path / "class.json.p7s", tmp_path / "other.json", ca, binary=True
    )
    assert tampered.returncode != 0


async def test_bytes_stay_the_same_while_devices_join(svc: Service) -> None:
    class_id, registered = await class_of(svc)
    paths = [f"/v1/mud/acme/{class_id}.json", f"/v1/mud/acme/{class_id}.json.p7s"]
    first = [await fetch(svc, p) for p in paths]
    await accounts.register_device(svc.store, "dev-3", "acme", class_name=CLASS_NAME,
                                   now=registered + 3600)  # fmt: skip
    again = [await fetch(svc, p) for p in paths]
    for (_, h1, b1), (_, h2, b2) in zip(first, again, strict=True):
        assert (b1, h1["ETag"]) == (b2, h2["ETag"])
    for path, (_, headers, _) in zip(paths, first, strict=True):
        status, h304, body = await fetch(svc, path, **{"If-None-Match": headers["ETag"]})
        assert (status, body, h304["ETag"]) == (304, b"", headers["ETag"])
    # A new class gets its own file, signed by the same key.
    await accounts.register_device(svc.store, "dev-b", "acme", class_name=CLASS_NAME + "-b",
                                   now=svc.clock())  # fmt: skip
    other = await svc.store.get_device("dev-b")
    assert other is not None and other.class_id != class_id
    status, _, body = await fetch(svc, f"/v1/mud/acme/{other.class_id}.json")
    assert status == 200
    assert json.loads(body)["ietf-mud:mud"]["mud-url"].endswith(f"/{other.class_id}.json")


async def test_nothing_is_published_for_a_class_without_devices(svc: Service) -> None:
    class_id, _ = await class_of(svc)
    await accounts.add_vendor(svc.store, "rival", vendor_domains=["rival.example"],
                              now=svc.clock())  # fmt: skip
    unknown = [
        f"/v1/mud/nobody/{class_id}",  # no such vendor
        f"/v1/mud/rival/{class_id}",  # a vendor, but the class is acme's
        "/v1/mud/acme/00000000-0000-0000-0000-000000000000",  # no device of that class
        f"/v1/mud/acme/{class_id.upper()}",  # not the class-id as registered
        "/v1/mud/acme/anything",
    ]
    for base in unknown:
        for suffix in (".json", ".json.p7s"):
            status, headers, body = await fetch(svc, base + suffix)
            assert status == 404, base + suffix
            assert headers["Content-Type"].startswith("application/problem+json")
            problem = json.loads(body)
            assert problem["status"] == 404 and problem["type"].endswith("/not-found")
    assert (await fetch(svc, f"/v1/mud/acme/{class_id}.xml"))[0] == 404
    # Nothing was signed for the unknown classes: no signer files were even created.
    assert not (svc.config.data_dir / mud_routes.MUD_KEY_DIR).exists()
