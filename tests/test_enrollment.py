"""AK enrollment by credential activation over HTTP, with a real swtpm: the device proves its
AK lives in the TPM whose EK the manufacturer registered; then its quotes are accepted."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPMA_OBJECT,
    TPMT_PUBLIC,
    TPMT_SYM_DEF,
)
from tpm2_pytss.utils import NoSuchIndex, create_ek_template

from suitsrv import accounts

from .service_fixtures import Service, start_service
from .swtpm import running_swtpm


class Keys:
    def __init__(self, esapi: ESAPI, ek: Any, ek_public: bytes, ak: Any, ak_public: bytes) -> None:
        self.esapi, self.ek, self.ek_public, self.ak, self.ak_public = (
            esapi,
            ek,
            ek_public,
            ak,
            ak_public,
        )


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    attrs = (
        TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
    )  # fmt: skip

    def no_nv(index: int) -> bytes:
        raise NoSuchIndex(index)

    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as sw, ESAPI(sw.tcti) as esapi:
        _, ek_template = create_ek_template("EK-ECC256", no_nv)
        ek, ek_public = esapi.create_primary(None, ek_template, ESYS_TR.ENDORSEMENT)[:2]
        ak_template = TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", attrs))
        ak, ak_public = esapi.create_primary(None, ak_template, ESYS_TR.ENDORSEMENT)[:2]
        try:
            yield Keys(esapi, ek, ek_public.marshal(), ak, ak_public.marshal())
        finally:
            esapi.flush_context(ak)
            esapi.flush_context(ek)


def _activate(keys: Keys, blob: bytes, encrypted: bytes) -> bytes:
    """What the device agent does: TPM2_ActivateCredential under the EK's policy."""
    esapi = keys.esapi
    session = esapi.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
        TPM2_ALG.SHA256,
    )  # fmt: skip
    try:
        esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
        secret = esapi.activate_credential(
            keys.ak, keys.ek, TPM2B_ID_OBJECT.unmarshal(blob)[0],
            TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted)[0],
            session1=ESYS_TR.PASSWORD, session2=session,
        )  # fmt: skip
        return bytes(secret)
    finally:
        esapi.flush_context(session)


@pytest.fixture
async def svc(tmp_path: Path, aiohttp_client: Any, tpm: Keys) -> AsyncIterator[tuple[Service, str]]:
    service = await start_service(tmp_path, aiohttp_client)
    _, token = await accounts.register_device(
        service.store, "tpm-1", "acme", class_name="thermostat-v2",
        keys={"ek_public": base64.b64encode(tpm.ek_public).decode()}, now=service.clock(),
    )  # fmt: skip
    yield service, token
    service.store.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_enrollment_by_credential_activation(svc: tuple[Service, str], tpm: Keys) -> None:
    service, token = svc
    body = {"ek_public": _b64(tpm.ek_public), "ak_public": _b64(tpm.ak_public)}
    resp = await service.client.post("/v1/device/attestation/enroll", json=body,
                                     headers=service.auth(token))  # fmt: skip
    assert resp.status == 201, await resp.text()
    challenge = await resp.json()
    secret = _activate(tpm, base64.b64decode(challenge["credential_blob"]),
                       base64.b64decode(challenge["encrypted_secret"]))  # fmt: skip
    resp = await service.client.post(
        "/v1/device/attestation/activate",
        json={"enrollment_id": challenge["enrollment_id"], "secret": _b64(secret)},
        headers=service.auth(token),
    )
    assert resp.status == 200, await resp.text()
    device = await service.store.get_device("tpm-1")
    assert device is not None and base64.b64decode(device.keys["ak_public"]) == tpm.ak_public
    # Single use: the same answer again is refused.
    again = await service.client.post(
        "/v1/device/attestation/activate",
        json={"enrollment_id": challenge["enrollment_id"], "secret": _b64(secret)},
        headers=service.auth(token),
    )
    assert again.status == 422


async def test_wrong_secret_or_foreign_ek_is_refused(svc: tuple[Service, str], tpm: Keys) -> None:
    service, token = svc
    body = {"ek_public": _b64(tpm.ek_public), "ak_public": _b64(tpm.ak_public)}
    challenge = await (await service.client.post("/v1/device/attestation/enroll", json=body,
                                                 headers=service.auth(token))).json()  # fmt: skip
    resp = await service.client.post(
        "/v1/device/attestation/activate",
        json={"enrollment_id": challenge["enrollment_id"], "secret": _b64(bytes(16))},
        headers=service.auth(token),
    )
    assert resp.status == 422 and "not in this TPM" in (await resp.json())["detail"]
    # An EK other than the registered one (here: the AK's public area) is refused at once.
    foreign = {"ek_public": _b64(tpm.ak_public), "ak_public": _b64(tpm.ak_public)}
    resp = await service.client.post("/v1/device/attestation/enroll", json=foreign,
                                     headers=service.auth(token))  # fmt: skip
    assert resp.status == 422 and "not the one registered" in (await resp.json())["detail"]
    # The EK is not an AK: a decrypt key presented as AK fails require_ak.
    swapped = {"ek_public": _b64(tpm.ek_public), "ak_public": _b64(tpm.ek_public)}
    resp = await service.client.post("/v1/device/attestation/enroll", json=swapped,
                                     headers=service.auth(token))  # fmt: skip
    assert resp.status == 422


async def test_a_new_enrollment_replaces_the_open_one(svc: tuple[Service, str], tpm: Keys) -> None:
    service, token = svc
    body = {"ek_public": _b64(tpm.ek_public), "ak_public": _b64(tpm.ak_public)}
    starts = []
    for _ in range(3):  # repeating the start keeps one open enrollment, not three
        resp = await service.client.post("/v1/device/attestation/enroll", json=body,
                                         headers=service.auth(token))  # fmt: skip
        starts.append(await resp.json())
    old, new = starts[0], starts[-1]
    secret = _activate(tpm, base64.b64decode(old["credential_blob"]),
                       base64.b64decode(old["encrypted_secret"]))  # fmt: skip
    resp = await service.client.post(
        "/v1/device/attestation/activate",
        json={"enrollment_id": old["enrollment_id"], "secret": _b64(secret)},
        headers=service.auth(token),
    )
    assert resp.status == 422 and "start again" in (await resp.json())["detail"]
    secret = _activate(tpm, base64.b64decode(new["credential_blob"]),
                       base64.b64decode(new["encrypted_secret"]))  # fmt: skip
    resp = await service.client.post(
        "/v1/device/attestation/activate",
        json={"enrollment_id": new["enrollment_id"], "secret": _b64(secret)},
        headers=service.auth(token),
    )
    assert resp.status == 200, await resp.text()
