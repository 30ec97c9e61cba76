"""Public MUD files (RFC 8520 §3.1, §13): `GET /v1/mud/{vendor}/{class_id}.json` and its
detached CMS signature at the same URL plus `.p7s`. No credentials: MUD managers fetch them.

A file is published only for a vendor's class with at least one registered device, so the
service never signs a policy for an arbitrary string. Its `last-update` is when the first device
of the class was registered: it does not move when more devices join, so the bytes, the
signature and the ETag stay the same until the policy itself changes (a new process signs again:
the CMS signing time differs, the file does not). Each file is signed once per process and kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import hdrs, web
from sqlite_utils import Database

from suitsrv.auth import Principal
from suitsrv.config import Config
from suitsrv.errors import NotFound
from suitsrv.mud import (
    MUD_MEDIA_TYPE,
    SIGNATURE_MEDIA_TYPE,
    MudPolicy,
    MudSigner,
    build_mud,
    encode_mud,
    mud_url,
    update_endpoint,
)

from .app import CLOCK, CONFIG, STORE, Route

__all__ = ["MUD_KEY_DIR", "class_registered_since", "mud_policy", "routes"]

#: Under the data directory: the MUD signing key and certificate (docs/mud.md "Keys").
MUD_KEY_DIR = "mud"


def class_registered_since(db: Database, vendor: str, class_id: str) -> float | None:
    """When the vendor's first device of ``class_id`` was registered; None when there is none
    (or no such vendor)."""
    row = db.execute(
        "SELECT MIN(d.created_at) FROM devices AS d JOIN vendors AS v ON v.name = d.vendor "
        "WHERE d.vendor = ? AND d.class_id = ?",
        [vendor, class_id],
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def mud_policy(config: Config, vendor: str, class_id: str, since: float) -> MudPolicy:
    """The class's policy: the pinhole to this service's public host, nothing vendor-specific
    yet (no cloud services are registered per class)."""
    host, port = update_endpoint(config.base_url)
    return MudPolicy(
        mud_url=mud_url(config.base_url, vendor, class_id),
        systeminfo=f"{vendor} device class {class_id}",
        mfg_name=vendor,
        model_name=class_id,
        update_host=host,
        update_port=port,
        last_update=datetime.fromtimestamp(since, UTC),
    )


@dataclass(frozen=True)
class _Signed:
    document: bytes
    signature: bytes
    max_age: int  # seconds: the file's cache-validity (hours, RFC 8520 §3.5)


@dataclass
class _MudState:
    """Per application: the signer (loaded on first use) and the files signed so far."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    signer: MudSigner | None = None
    files: dict[tuple[str, str, float], _Signed] = field(default_factory=dict)


# create_app freezes the application before the first request, so state that appears lazily
# cannot be an AppKey; keyed weakly, it goes with the application.
_STATES: weakref.WeakKeyDictionary[web.Application, _MudState] = weakref.WeakKeyDictionary()


async def _signed(request: web.Request) -> _Signed:
    app = request.app
    vendor, class_id = request.match_info["vendor"], request.match_info["class_id"]
    since = await app[STORE].read(class_registered_since, vendor, class_id)
    if since is None:
        raise NotFound(f"no MUD file for class {class_id} of vendor {vendor}")
    state = _STATES.setdefault(app, _MudState())
    key = (vendor, class_id, since)
    if (found := state.files.get(key)) is not None:
        return found
    async with state.lock:  # one signer, created once; each file signed once
        if (found := state.files.get(key)) is not None:
            return found
        config = app[CONFIG]
        try:
            policy = mud_policy(config, vendor, class_id, since)
        except RuntimeError as exc:  # a stored name that cannot be a URL path segment
            raise NotFound(f"no MUD file for class {class_id} of vendor {vendor}: {exc}") from exc
        if state.signer is None:
            now = datetime.fromtimestamp(app[CLOCK](), UTC)
            cn = update_endpoint(config.base_url)[0]
            state.signer = await asyncio.to_thread(
                MudSigner.load_or_create, config.data_dir / MUD_KEY_DIR, cn, now=now
            )
        document = encode_mud(build_mud(policy))
        signature = await asyncio.to_thread(state.signer.sign, document)
        found = state.files[key] = _Signed(document, signature, policy.cache_validity * 3600)
    return found


def _send(request: web.Request, body: bytes, content_type: str, max_age: int) -> web.Response:
    etag = hashlib.sha256(body).hexdigest()
    headers = {hdrs.ETAG: f'"{etag}"', hdrs.CACHE_CONTROL: f"max-age={max_age}"}
    # RFC 9110 §13.1.2: weak comparison, and "*" matches any representation.
    raw = request.headers.get(hdrs.IF_NONE_MATCH, "")
    if raw.strip() == "*" or any(tag.value == etag for tag in request.if_none_match or ()):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, headers=headers)


async def get_mud(request: web.Request, principal: Principal | None) -> web.StreamResponse:
    signed = await _signed(request)
    return _send(request, signed.document, MUD_MEDIA_TYPE, signed.max_age)


async def get_mud_signature(
    request: web.Request, principal: Principal | None
) -> web.StreamResponse:
    signed = await _signed(request)
    return _send(request, signed.signature, SIGNATURE_MEDIA_TYPE, signed.max_age)


def routes() -> list[Route]:
    return [
        Route("GET", "/v1/mud/{vendor}/{class_id}.json", get_mud, None,
              "A device class's MUD file (RFC 8520)", "mud",
              responses={200: "MUD file", 304: "not modified", 404: "no such class"},
              parameters=("vendor", "class_id")),
        Route("GET", "/v1/mud/{vendor}/{class_id}.json.p7s", get_mud_signature, None,
              "The MUD file's detached CMS signature (DER)", "mud",
              responses={200: "signature", 304: "not modified", 404: "no such class"},
              parameters=("vendor", "class_id")),
    ]  # fmt: skip
