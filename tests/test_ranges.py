"""send_blob over real HTTP: conditionals, single and multipart ranges, TLS fallback, abuse.

The app here is a stand-in for the service: one route that calls send_blob, and a middleware
that renders ServiceError the way the real one does (status, problem+json, exc.headers).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import random
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpClient, AiohttpServer

from suitsrv.errors import ServiceError
from suitsrv.web.ranges import CACHE_CONTROL, MAX_RANGES, send_blob

from .conftest import examples

MiB = 1024 * 1024
BIG = 3 * MiB
SMALL = 300


@dataclass(frozen=True)
class Blob:
    path: Path
    data: bytes
    content_type: str

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def tag(self) -> str:
        return f'"{self.etag}"'


BLOBS = web.AppKey("blobs", dict[str, Blob])
Client = TestClient[web.Request, web.Application]


async def serve(request: web.Request) -> web.StreamResponse:
    blob = request.app[BLOBS][request.match_info["name"]]
    return await send_blob(
        request, blob.path, etag=blob.etag, size=len(blob.data), content_type=blob.content_type
    )


@web.middleware
async def problems(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as exc:
        body = {"type": exc.problem_type, "status": exc.status, "detail": exc.detail}
        return web.json_response(
            body, status=exc.status, headers=exc.headers, content_type="application/problem+json"
        )


def write_blob(folder: Path, name: str, size: int, content_type: str) -> Blob:
    data = random.Random(name).randbytes(size)
    path = folder / name
    path.write_bytes(data)
    return Blob(path, data, content_type)


@pytest.fixture
def blobs(tmp_path: Path) -> dict[str, Blob]:
    return {
        "big": write_blob(tmp_path, "big", BIG, "application/octet-stream"),
        "small": write_blob(tmp_path, "small", SMALL, "application/suit-envelope+cose"),
        "empty": write_blob(tmp_path, "empty", 0, "application/octet-stream"),
    }


def make_app(blobs: dict[str, Blob]) -> web.Application:
    app = web.Application(middlewares=[problems])
    app[BLOBS] = blobs
    app.router.add_get("/blobs/{name}", serve)
    return app


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, blobs: dict[str, Blob]) -> Client:
    return await aiohttp_client(make_app(blobs))


async def get(
    client: TestClient[web.Request, Any],
    name: str,
    method: str = "GET",
    **headers: str,
) -> tuple[aiohttp.ClientResponse, bytes]:
    hdrs = {key.replace("_", "-"): value for key, value in headers.items()}
    async with client.request(method, f"/blobs/{name}", headers=hdrs) as resp:
        return resp, await resp.read()


def parse_byteranges(body: bytes, content_type: str) -> list[tuple[int, int, int, bytes]]:
    """Strict RFC 9110 §14.6 parse: [(first, last, complete_length, data)]."""
    match = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", content_type)
    assert match, content_type
    delimiter = b"--" + match.group(1).encode()
    parts = []
    pos = 0
    while body.startswith(delimiter + b"\r\n", pos):
        head_end = body.index(b"\r\n\r\n", pos)
        lines = body[pos + len(delimiter) + 2 : head_end].decode("ascii").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines)
        assert set(fields) == {"Content-Type", "Content-Range"}
        cr = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", fields["Content-Range"])
        assert cr, fields
        first, last, total = (int(g) for g in cr.groups())
        data_start = head_end + 4
        data_end = data_start + last - first + 1
        assert body[data_end : data_end + 2] == b"\r\n"
        parts.append((first, last, total, body[data_start:data_end]))
        pos = data_end + 2
    assert body[pos:] == delimiter + b"--\r\n"
    return parts


def assert_blob_headers(resp: aiohttp.ClientResponse, blob: Blob) -> None:
    assert resp.headers["ETag"] == blob.tag
    assert resp.headers["Cache-Control"] == CACHE_CONTROL
    assert resp.headers["Accept-Ranges"] == "bytes"


# -- whole blob -------------------------------------------------------------------------


async def test_full_get(client: Client, blobs: dict[str, Blob]) -> None:
    resp, body = await get(client, "big")
    assert resp.status == 200
    assert body == blobs["big"].data
    assert_blob_headers(resp, blobs["big"])
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Length"] == str(BIG)
    assert "Content-Range" not in resp.headers


async def test_content_type_passes_through(client: Client, blobs: dict[str, Blob]) -> None:
    resp, body = await get(client, "small")
    assert resp.headers["Content-Type"] == "application/suit-envelope+cose"
    assert body == blobs["small"].data


async def test_head_has_get_headers_and_no_body(client: Client, blobs: dict[str, Blob]) -> None:
    full, _ = await get(client, "big")
    resp, body = await get(client, "big", "HEAD")
    assert resp.status == 200
    assert body == b""
    for name in ("ETag", "Cache-Control", "Accept-Ranges", "Content-Type", "Content-Length"):
        assert resp.headers[name] == full.headers[name], name


async def test_head_ignores_range(client: Client) -> None:
    # RFC 9110 §14.2: range handling is defined for GET only.
    resp, body = await get(client, "big", "HEAD", Range="bytes=0-9")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(BIG)
    assert body == b""


async def test_empty_blob(client: Client, blobs: dict[str, Blob]) -> None:
    resp, body = await get(client, "empty")
    assert (resp.status, body, resp.headers["Content-Length"]) == (200, b"", "0")
    assert_blob_headers(resp, blobs["empty"])
    head, _ = await get(client, "empty", "HEAD")
    assert head.headers["Content-Length"] == "0"


async def test_empty_blob_range_is_unsatisfiable(client: Client) -> None:
    for spec in ("bytes=0-", "bytes=-5", "bytes=0-0"):
        resp, _ = await get(client, "empty", Range=spec)
        assert resp.status == 416, spec
        assert resp.headers["Content-Range"] == "bytes */0"


# -- If-None-Match ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "value", ["{tag}", "W/{tag}", '"other", {tag}', "*", ' "x" , W/{tag} '], ids=repr
)
async def test_if_none_match_304(
    client: Client, blobs: dict[str, Blob], method: str, value: str
) -> None:
    resp, body = await get(client, "big", method, If_None_Match=value.format(tag=blobs["big"].tag))
    assert resp.status == 304
    assert body == b""
    assert resp.headers["ETag"] == blobs["big"].tag
    assert resp.headers["Cache-Control"] == CACHE_CONTROL
    assert "Content-Length" not in resp.headers


async def test_if_none_match_beats_range(client: Client, blobs: dict[str, Blob]) -> None:
    # RFC 9110 §13.2.2: If-None-Match is evaluated before Range.
    resp, _ = await get(client, "big", If_None_Match=blobs["big"].tag, Range="bytes=0-9")
    assert resp.status == 304


async def test_if_none_match_other_tag_is_full(client: Client, blobs: dict[str, Blob]) -> None:
    resp, body = await get(client, "big", If_None_Match='"0123", "*"')
    assert resp.status == 200
    assert body == blobs["big"].data


# -- single ranges ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-1023", 0, 1023),
        ("bytes=1000000-1999999", 1_000_000, 1_999_999),
        ("bytes=-500", BIG - 500, BIG - 1),
        ("bytes=2000000-", 2_000_000, BIG - 1),
        (f"bytes={BIG - 10}-{BIG + 1000}", BIG - 10, BIG - 1),
        (f"bytes=-{BIG * 2}", 0, BIG - 1),
        ("bytes=0-", 0, BIG - 1),
        (f"bytes={BIG - 1}-", BIG - 1, BIG - 1),
        ("BYTES=5-9", 5, 9),
        ("bytes=5-9, ,", 5, 9),
        (f"bytes=7-8,{BIG}-", 7, 8),
        ("bytes=0-" + "9" * 40, 0, BIG - 1),
    ],
)
async def test_single_range(
    client: Client, blobs: dict[str, Blob], spec: str, first: int, last: int
) -> None:
    resp, body = await get(client, "big", Range=spec)
    assert resp.status == 206
    assert_blob_headers(resp, blobs["big"])
    assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{BIG}"
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Length"] == str(last - first + 1)
    assert body == blobs["big"].data[first : last + 1]


async def test_resume_download(client: Client, blobs: dict[str, Blob]) -> None:
    first, head = await get(client, "big", Range=f"bytes=0-{MiB - 1}")
    assert first.status == 206
    rest, tail = await get(
        client, "big", Range=f"bytes={len(head)}-", If_Range=first.headers["ETag"]
    )
    assert rest.status == 206
    assert rest.headers["Content-Range"] == f"bytes {MiB}-{BIG - 1}/{BIG}"
    assert hashlib.sha256(head + tail).hexdigest() == blobs["big"].etag


# -- multiple ranges --------------------------------------------------------------------


async def test_multipart_ranges(client: Client, blobs: dict[str, Blob]) -> None:
    data = blobs["big"].data
    resp, body = await get(client, "big", Range="bytes=2000000-2999999,0-99,-10")
    assert resp.status == 206
    assert_blob_headers(resp, blobs["big"])
    assert "Content-Range" not in resp.headers
    assert resp.headers["Content-Length"] == str(len(body))
    parts = parse_byteranges(body, resp.headers["Content-Type"])
    # RFC 9110 §15.3.7.2: parts keep the order of the request.
    assert [(a, b) for a, b, _, _ in parts] == [
        (2_000_000, 2_999_999),
        (0, 99),
        (BIG - 10, BIG - 1),
    ]
    for first, last, total, chunk in parts:
        assert total == BIG
        assert chunk == data[first : last + 1]


async def test_multipart_with_aiohttp_reader(client: Client, blobs: dict[str, Blob]) -> None:
    # An independent parser: aiohttp's own multipart reader.
    async with client.get("/blobs/small", headers={"Range": "bytes=0-9,20-29"}) as resp:
        reader = aiohttp.MultipartReader.from_response(resp)
        got = []
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            assert part.headers["Content-Type"] == "application/suit-envelope+cose"
            got.append((part.headers["Content-Range"], await part.read()))
    data = blobs["small"].data
    assert got == [(f"bytes 0-9/{SMALL}", data[0:10]), (f"bytes 20-29/{SMALL}", data[20:30])]


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-99,50-149", 0, 149),
        ("bytes=0-99,100-199", 0, 199),
        ("bytes=20-29,0-9,5-25", 0, 29),
        ("bytes=" + ",".join(f"{i}-{i + 1}" for i in range(0, 400, 2)), 0, 399),
        ("bytes=-100,0-", 0, BIG - 1),
    ],
)
async def test_coalescing(
    client: Client, blobs: dict[str, Blob], spec: str, first: int, last: int
) -> None:
    resp, body = await get(client, "big", Range=spec)
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{BIG}"
    assert body == blobs["big"].data[first : last + 1]


async def test_coalescing_keeps_earliest_position(client: Client, blobs: dict[str, Blob]) -> None:
    resp, body = await get(client, "big", Range="bytes=500-599,0-9,550-700")
    parts = parse_byteranges(body, resp.headers["Content-Type"])
    assert [(a, b) for a, b, _, _ in parts] == [(500, 700), (0, 9)]


async def test_max_ranges_is_multipart(client: Client) -> None:
    spec = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 4}" for i in range(MAX_RANGES))
    resp, body = await get(client, "big", Range=spec)
    assert resp.status == 206
    assert len(parse_byteranges(body, resp.headers["Content-Type"])) == MAX_RANGES


# -- ignored Range (full 200) and unsatisfiable Range (416) -----------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "bytes=" + ",".join(f"{i * 10}-{i * 10 + 4}" for i in range(MAX_RANGES + 1)),
        "bytes=abc",
        "bytes=5-1",
        "bytes=-",
        "bytes=",
        "bytes=,",
        "bytes",
        "bytes=1-2-3",
        "bytes=0x10-20",
        "bytes=0-1;2-3",
        "bytes = 0-1",
        "items=0-1",
        "bytes=0-1,9-3",
        "bytes=-" + "9" * 5000,
    ],
    ids=lambda spec: spec[:40],
)
async def test_ignored_range_gives_full(client: Client, blobs: dict[str, Blob], spec: str) -> None:
    resp, body = await get(client, "big", Range=spec)
    assert resp.status == 200
    assert "Content-Range" not in resp.headers
    assert body == blobs["big"].data


async def test_two_range_fields_are_ignored(client: Client, blobs: dict[str, Blob]) -> None:
    headers = [("Range", "bytes=0-1"), ("Range", "bytes=2-3")]
    async with client.get("/blobs/small", headers=headers) as resp:
        assert resp.status == 200
        assert await resp.read() == blobs["small"].data


@pytest.mark.parametrize(
    "spec", [f"bytes={BIG}-", f"bytes={BIG + 5}-{BIG + 10}", "bytes=-0", f"bytes=-0,{BIG}-"]
)
async def test_unsatisfiable(client: Client, spec: str) -> None:
    resp, body = await get(client, "big", Range=spec)
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{BIG}"
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert b"range-not-satisfiable" in body


# -- If-Range ---------------------------------------------------------------------------


async def test_if_range_match(client: Client, blobs: dict[str, Blob]) -> None:
    resp, body = await get(client, "big", Range="bytes=10-19", If_Range=blobs["big"].tag)
    assert resp.status == 206
    assert body == blobs["big"].data[10:20]


@pytest.mark.parametrize(
    "value", ['"0123abcd"', "W/{tag}", "Wed, 21 Oct 2015 07:28:00 GMT", "{etag}", "garbage"]
)
async def test_if_range_mismatch_gives_full(
    client: Client, blobs: dict[str, Blob], value: str
) -> None:
    if_range = value.format(tag=blobs["big"].tag, etag=blobs["big"].etag)
    resp, body = await get(client, "big", Range="bytes=10-19", If_Range=if_range)
    assert resp.status == 200
    assert body == blobs["big"].data


# -- TLS: no sendfile(2), chunked copy --------------------------------------------------


def tls_contexts(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


async def test_tls_full_and_ranges(
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
    blobs: dict[str, Blob],
    tmp_path: Path,
) -> None:
    server_ctx, client_ctx = tls_contexts(tmp_path)
    server = await aiohttp_server(make_app(blobs), ssl=server_ctx)
    client: TestClient[web.Request, None] = await aiohttp_client(
        server, connector=aiohttp.TCPConnector(ssl=client_ctx)
    )
    assert client.make_url("/").scheme == "https"
    data = blobs["big"].data
    resp, body = await get(client, "big")
    assert (resp.status, body) == (200, data)
    resp, body = await get(client, "big", Range=f"bytes={MiB + 3}-")
    assert (resp.status, body) == (206, data[MiB + 3 :])
    resp, body = await get(client, "big", Range="bytes=0-9,-1000000")
    parts = parse_byteranges(body, resp.headers["Content-Type"])
    assert [c for *_, c in parts] == [data[:10], data[-1_000_000:]]


# -- property: any range set against slicing --------------------------------------------


_spec = st.one_of(
    st.tuples(st.integers(0, SMALL + 20), st.none()),  # first-
    st.integers(0, SMALL + 20).flatmap(  # first-last
        lambda first: st.tuples(st.just(first), st.integers(first, SMALL + 20))
    ),
    st.tuples(st.none(), st.integers(0, SMALL + 20)),  # -suffix
)


def clamp(first: int | None, last: int | None) -> range:
    if first is None:
        assert last is not None
        return range(max(SMALL - last, 0), SMALL)
    return range(first, SMALL if last is None else min(last + 1, SMALL))


@settings(
    max_examples=examples(50),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(specs=st.lists(_spec, min_size=1, max_size=24))
async def test_any_range_set(
    client: Client, blobs: dict[str, Blob], specs: list[tuple[int | None, int | None]]
) -> None:
    data = blobs["small"].data
    header = "bytes=" + ",".join(
        f"{'' if a is None else a}-{'' if b is None else b}" for a, b in specs
    )
    wanted = [clamp(a, b) for a, b in specs]
    covered = {i for span in wanted for i in span}
    runs = sorted(i for i in covered if i - 1 not in covered)
    resp, body = await get(client, "small", Range=header)
    if not covered:
        assert resp.status == 416
        return
    if len(runs) > MAX_RANGES:
        assert (resp.status, body) == (200, data)
        return
    assert resp.status == 206
    if len(runs) == 1:
        first, last = min(covered), max(covered)
        assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{SMALL}"
        assert body == data[first : last + 1]
        return
    parts = parse_byteranges(body, resp.headers["Content-Type"])
    assert len(parts) == len(runs)
    got: set[int] = set()
    for first, last, total, chunk in parts:
        assert total == SMALL
        assert chunk == data[first : last + 1]
        assert got.isdisjoint(range(first, last + 1))
        got |= set(range(first, last + 1))
    assert got == covered
    # Each part sits where its earliest requested spec was.
    firsts = [
        min(i for i, w in enumerate(wanted) if w and w.start in range(a, b + 1))
        for a, b, _, _ in parts
    ]
    assert firsts == sorted(firsts)
