"""``suitsrv manifest build | inspect | verify | sever``.

``verify`` is called by other tools; its interface is stable: exit 0 accepted, 1 rejected
(one line naming the reason, or a JSON object with ``--json``), 2 usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from manifests.build import build_manifest, sign
from manifests.digest import Digest
from manifests.errors import ManifestError
from manifests.model import Envelope, Pen, VendorId
from manifests.numbers import DigestAlg
from manifests.parse import MAX_ENVELOPE_SIZE, parse_envelope
from manifests.sever import sever
from manifests.spec import ManifestSpec, load_spec
from manifests.summary import summarize
from manifests.verify import verify_envelope

from .keys import ALGORITHMS, UsageError, load_signing_key, load_trust
from .render import envelope_view, to_text

__all__ = ["add_manifest"]

_CHUNK = 1 << 20


def _hash_file(path: Path) -> tuple[Digest, int]:
    """SHA-256 and size, streamed: firmware images are never read whole into memory."""
    h = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise UsageError(f"cannot read payload {path}: {exc.strerror}") from exc
    return Digest(DigestAlg.SHA256, h.digest()), size


def _resolve(spec: ManifestSpec, base: Path) -> tuple[ManifestSpec, dict[int, bytes]]:
    components = []
    integrated: dict[int, bytes] = {}
    for index, given in enumerate(spec.components):
        component = given
        if given.file is not None:
            path = base / given.file
            digest, size = _hash_file(path)
            component = dataclasses.replace(given, digest=digest, size=size)
            if given.integrated:
                integrated[index] = path.read_bytes()
        components.append(component)
    return dataclasses.replace(spec, components=tuple(components)), integrated


def _write_atomic(path: Path, data: bytes) -> None:
    """temp + fsync + rename: a crash never leaves a half-written envelope behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_envelope(path: str) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > MAX_ENVELOPE_SIZE:
            raise UsageError(f"{path} is {size} bytes, over the {MAX_ENVELOPE_SIZE}-byte limit")
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def _build(args: argparse.Namespace) -> int:
    spec_path = Path(args.spec)
    try:
        text = spec_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read spec {spec_path}: {exc}") from exc
    keys = [load_signing_key(k, args.alg) for k in args.key]
    if not keys and not args.unsigned:
        raise UsageError("give --key KEY.pem (or --unsigned for an envelope to sign later)")
    try:
        spec, integrated = _resolve(load_spec(text), spec_path.parent)
        envelope = build_manifest(spec, integrated)
        if keys:
            envelope = sign(envelope, keys)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.output)
    _write_atomic(out, envelope)
    digest = parse_envelope(envelope).digest
    print(f"wrote {out} ({len(envelope)} bytes, sequence number {spec.sequence_number}, "
          f"manifest digest {digest.hex})")  # fmt: skip
    return 0


def _inspect(args: argparse.Namespace) -> int:
    try:
        envelope = parse_envelope(_read_envelope(args.file))
    except ManifestError as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return 1
    view = envelope_view(envelope)
    print(json.dumps(view, indent=2) if args.json else to_text(view))
    return 0


def _id(value: VendorId | None) -> str | None:
    if value is None:
        return None
    return f"pen:{value.relative_oid.hex()}" if isinstance(value, Pen) else str(value)


def _identity(envelope: Envelope | None) -> dict[str, Any]:
    if envelope is None:
        return {"digest": None, "sequence_number": None, "vendor_id": None, "class_id": None}
    summary = summarize(envelope.manifest)
    vendor = next((v for s in summary for v in s.vendor_ids), None)
    klass = next((c for s in summary for c in s.class_ids), None)
    return {
        "digest": envelope.digest.hex,
        "sequence_number": envelope.manifest.sequence_number,
        "vendor_id": _id(vendor),
        "class_id": str(klass) if klass else None,
    }


def _verify(args: argparse.Namespace) -> int:
    trust = load_trust(args.trust, args.mac_key, args.trust_alg)
    data = _read_envelope(args.file)
    envelope: Envelope | None = None
    try:
        envelope = parse_envelope(data)
        verified = verify_envelope(envelope, trust)
    except ManifestError as exc:
        reason = str(exc)
        if args.json:
            print(json.dumps({"accepted": False, "reason": reason, **_identity(envelope)}))
        else:
            print(f"rejected: {reason}")
        return 1
    result = {"accepted": True, "reason": None, **_identity(envelope)}
    result["digest"] = verified.identity
    result["signers"] = list(verified.signers)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"accepted: sequence number {verified.sequence_number}, digest {verified.identity}, "
              f"signed by {', '.join(verified.signers)}")  # fmt: skip
    return 0


def _sever(args: argparse.Namespace) -> int:
    try:
        severed = sever(parse_envelope(_read_envelope(args.file)))
    except ManifestError as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return 1
    _write_atomic(Path(args.output), severed)
    print(f"wrote {args.output} ({len(severed)} bytes; signatures untouched)")
    return 0


def add_manifest(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("manifest", help="build, inspect, verify SUIT envelopes")
    sub = parser.add_subparsers(dest="manifest_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="build and sign an envelope from a TOML spec")
    build.add_argument("spec", metavar="SPEC.toml")
    build.add_argument("--key", action="append", default=[], metavar="KEY.pem",
                       help="private key (PEM); repeat to add several signatures")  # fmt: skip
    build.add_argument("--alg", choices=sorted(ALGORITHMS),
                       help="COSE algorithm (default: ES256 for P-256, EdDSA for Ed25519)",
                       )  # fmt: skip
    build.add_argument("--unsigned", action="store_true", help="write an unsigned envelope")
    build.add_argument("-o", "--output", required=True, metavar="OUT.suit")
    build.set_defaults(run=_build)

    inspect = sub.add_parser("inspect", help="show every field of an envelope")
    inspect.add_argument("file", metavar="FILE")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(run=_inspect)

    verify = sub.add_parser("verify", help="authenticate an envelope (exit 0 accepted, 1 rejected)")
    verify.add_argument("file", metavar="FILE")
    verify.add_argument("--trust", action="append", default=[], metavar="PUB.pem",
                        help="trusted public key: PEM or COSE_Key; repeatable")  # fmt: skip
    verify.add_argument("--trust-alg", action="append", default=[], choices=sorted(ALGORITHMS),
                        help="algorithms the PEM keys may sign with (default: all for the key)",
                        )  # fmt: skip
    verify.add_argument("--mac-key", action="append", default=[], metavar="HEX",
                        help="trusted HMAC-256 key in hex; repeatable")  # fmt: skip
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=_verify)

    severp = sub.add_parser("sever", help="drop severable members carried in the envelope")
    severp.add_argument("file", metavar="FILE")
    severp.add_argument("-o", "--output", required=True, metavar="OUT.suit")
    severp.set_defaults(run=_sever)
