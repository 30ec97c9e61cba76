"""``suitsrv serve`` and ``suitsrv admin``: run the service, manage its accounts offline."""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from suitsrv import accounts
from suitsrv.config import Config, ConfigError, load_config
from suitsrv.errors import ServiceError
from suitsrv.store import Role, SqliteStore
from suitsrv.store import queries as q
from suitsrv.web import create_app
from suitsrv.web.app import INFLIGHT, JsonAccessLogger
from suitsrv.web.events import stop_streams

from .keys import UsageError

__all__ = ["add_admin", "add_serve"]

T = TypeVar("T")

DRAIN_SECONDS = 30


def _config(args: argparse.Namespace) -> Config:
    overrides = {"data-dir": args.data_dir} if args.data_dir else {}
    try:
        return load_config(Path(args.config) if args.config else None, overrides=overrides)
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (see docs/service.md)")
    parser.add_argument("--data-dir", metavar="DIR", help="overrides data-dir / SUITSRV_DATA_DIR")


def _serve(args: argparse.Namespace) -> int:
    config = _config(args)
    overrides: dict[str, Any] = {}
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError("--listen must be HOST:PORT")
        overrides.update(host=host.strip("[]"), port=int(port))
    if args.public_base_url:
        overrides["public_base_url"] = args.public_base_url.rstrip("/")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        overrides.update(tls_cert=Path(args.tls_cert), tls_key=Path(args.tls_key))
    config = dataclasses.replace(config, **overrides)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    store = SqliteStore(config.data_dir)
    token = asyncio.run(accounts.init_operator(store, time.time()))
    if token is not None:
        # No default credentials: the first operator token exists only on this terminal.
        print(f"operator token (shown once, store it now): {token}", flush=True)
    ssl_context = None
    if config.tls_cert and config.tls_key:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(config.tls_cert, config.tls_key)
    app = create_app(config, store)
    print(f"suitsrv serving {config.base_url} (data in {config.data_dir})", flush=True)
    if config.allow_resettable_pcrs:
        # Say it where the operator looks: with this, software on a device could forge the
        # measurements that reinstate it (docs/adr/0006).
        print(
            "suitsrv: warning: attestation.allow-resettable-pcrs is on: images measured into "
            "PCRs 16-23 can affirm a device (for swtpm simulations, not for products)",
            file=sys.stderr,
            flush=True,
        )
    try:
        asyncio.run(_run(app, config, ssl_context))
    except OSError as exc:
        print(
            f"suitsrv: cannot serve on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr
        )
        return 1
    finally:
        store.close()
    return 0


async def _run(app: web.Application, config: Config, ssl_context: ssl.SSLContext | None) -> None:
    """Serve until SIGTERM/SIGINT, then drain: stop accepting connections, let the requests in
    flight finish (uploads included) for up to DRAIN_SECONDS, and only then close connections."""
    runner = web.AppRunner(
        app,
        access_log_class=JsonAccessLogger,
        access_log=logging.getLogger("suitsrv.access") if config.access_log else None,
        shutdown_timeout=5,
        handle_signals=False,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await site.stop()  # no new connections from here on
        await stop_streams(app)  # event streams would otherwise hold the drain for 30 s
        if not await app[INFLIGHT].wait_idle(DRAIN_SECONDS):
            logging.getLogger("suitsrv").warning(
                "%d request(s) still running after %ss; closing", app[INFLIGHT].count, DRAIN_SECONDS
            )
    finally:
        await runner.cleanup()


def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("serve", help="run the service (creates the data directory first)")
    _common(parser)
    parser.add_argument("--listen", metavar="HOST:PORT")
    parser.add_argument("--public-base-url", metavar="URL")
    parser.add_argument("--tls-cert", metavar="PEM")
    parser.add_argument("--tls-key", metavar="PEM")
    parser.set_defaults(run=_serve)


# -- admin ------------------------------------------------------------------------------


def _with_store(
    args: argparse.Namespace, work: Callable[[SqliteStore], Coroutine[Any, Any, T]]
) -> T:
    store = SqliteStore(_config(args).data_dir)
    try:
        return asyncio.run(work(store))
    except ServiceError as exc:
        raise UsageError(exc.detail) from exc
    finally:
        store.close()


def _print(data: object) -> None:
    print(json.dumps(data, indent=2))


def _init(args: argparse.Namespace) -> int:
    token = _with_store(args, lambda s: accounts.init_operator(s, time.time()))
    if token is None:
        print("an operator token exists already; issue more with 'admin token issue'")
        return 1
    print(f"operator token (shown once, store it now): {token}")
    return 0


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _vendor_add(args: argparse.Namespace) -> int:
    anchors: list[dict[str, Any]] = [
        {"pem": _read(p), **({"algorithms": args.trust_alg} if args.trust_alg else {})}
        for p in args.trust
    ]
    anchors += [{"hmac": h} for h in args.mac_key]
    anchors += [{"cose_key": base64.b64encode(_read_bytes(p)).decode()} for p in args.cose_key]

    async def work(store: SqliteStore) -> dict[str, Any]:
        vendor, records = await accounts.add_vendor(
            store, args.name, vendor_ids=args.vendor_id, vendor_domains=args.vendor_domain,
            anchors=anchors, now=time.time(),
        )  # fmt: skip
        return {"name": vendor.name, "vendor_ids": list(vendor.vendor_ids),
                "anchors": [r.anchor_id for r in records]}  # fmt: skip

    _print(_with_store(args, work))
    return 0


def _vendor_list(args: argparse.Namespace) -> int:
    vendors = _with_store(args, lambda s: s.list_vendors())
    _print([{"name": v.name, "vendor_ids": list(v.vendor_ids)} for v in vendors])
    return 0


def _token_issue(args: argparse.Namespace) -> int:
    async def work(store: SqliteStore) -> tuple[str, str]:
        token, record = await accounts.issue_credential(
            store, Role(args.role), args.scope or "*", label=args.label, now=time.time()
        )
        return token, record.token_id

    token, token_id = _with_store(args, work)
    print(f"token {token_id} (shown once): {token}")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    done = _with_store(args, lambda s: s.revoke_token(args.token_id, time.time()))
    print("revoked" if done else f"no active token {args.token_id}")
    return 0 if done else 1


def _token_list(args: argparse.Namespace) -> int:
    async def work(store: SqliteStore) -> list[Any]:
        return await store.read(q.list_tokens)

    _print([{"token_id": t.token_id, "role": str(t.role), "scope": t.scope, "label": t.label,
             "revoked": t.revoked_at is not None} for t in _with_store(args, work)])  # fmt: skip
    return 0


def _device_add(args: argparse.Namespace) -> int:
    keys = {"report_key": _read(args.report_key)} if args.report_key else {}
    if args.ek:
        keys["ek_pem"] = _read(args.ek)
    if args.ek_public:
        try:
            base64.b64decode(args.ek_public, validate=True)
        except binascii.Error as exc:
            raise UsageError(f"--ek-public is not base64: {exc}") from exc
        keys["ek_public"] = args.ek_public

    async def work(store: SqliteStore) -> tuple[Any, str]:
        return await accounts.register_device(
            store, args.device_id, args.vendor, class_id=args.class_id, class_name=args.class_name,
            gateway=args.gateway, keys=keys, claim_code=args.claim_code, now=time.time(),
        )  # fmt: skip

    device, token = _with_store(args, work)
    print(f"device {device.device_id} (class {device.class_id}); token (shown once): {token}")
    return 0


def add_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser("admin", help="manage accounts in a data directory (offline)")
    _common(admin)
    actions = admin.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    actions.add_parser("init", help="create the first operator token").set_defaults(run=_init)

    vendor = actions.add_parser("vendor", help="vendors and their trust anchors")
    vendor_sub = vendor.add_subparsers(dest="vendor_command", metavar="ACTION", required=True)
    add = vendor_sub.add_parser("add", help="register a vendor")
    add.add_argument("name")
    add.add_argument("--vendor-id", action="append", default=[], metavar="UUID")
    add.add_argument("--vendor-domain", action="append", default=[], metavar="DOMAIN",
                     help="vendor-id = UUID5(DNS, DOMAIN) (manifest-37 §8.4.8.2)")  # fmt: skip
    add.add_argument("--trust", action="append", default=[], metavar="PUB.pem")
    add.add_argument("--trust-alg", action="append", default=[],
                     choices=sorted(accounts.ALGORITHM_NAMES))  # fmt: skip
    add.add_argument("--mac-key", action="append", default=[], metavar="HEX")
    add.add_argument("--cose-key", action="append", default=[], metavar="FILE",
                     help="a trust anchor as a COSE_Key (CBOR) file carrying its alg")  # fmt: skip
    add.set_defaults(run=_vendor_add)
    vendor_sub.add_parser("list").set_defaults(run=_vendor_list)

    token = actions.add_parser("token", help="issue, revoke and list credentials")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    issue = token_sub.add_parser("issue")
    issue.add_argument("--role", required=True, choices=[str(r) for r in Role])
    issue.add_argument("--scope", help="vendor name, device id or gateway id")
    issue.add_argument("--label", default="")
    issue.set_defaults(run=_token_issue)
    revoke = token_sub.add_parser("revoke")
    revoke.add_argument("token_id")
    revoke.set_defaults(run=_token_revoke)
    token_sub.add_parser("list").set_defaults(run=_token_list)

    device = actions.add_parser("device", help="register devices")
    device_sub = device.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    dadd = device_sub.add_parser("add")
    dadd.add_argument("device_id")
    dadd.add_argument("--vendor", required=True)
    group = dadd.add_mutually_exclusive_group(required=True)
    group.add_argument("--class-id", metavar="UUID")
    group.add_argument("--class-name", metavar="NAME", help="class-id = UUID5(vendor-id, NAME)")
    dadd.add_argument("--gateway")
    dadd.add_argument("--claim-code", help="secret printed on the device; gateways claim with it")
    dadd.add_argument("--report-key", metavar="PUB.pem", help="key the device signs reports with")
    dadd.add_argument("--ek", metavar="PEM", help="the device TPM's endorsement key (PEM)")
    dadd.add_argument("--ek-public", metavar="BASE64",
                      help="the EK as base64 TPM2B_PUBLIC (`suitsrv agent identity --json`); "
                           "AK enrollment by credential activation checks against it")  # fmt: skip
    dadd.set_defaults(run=_device_add)

    from .timeline_cmd import add_timeline  # it imports this module

    add_timeline(actions)
