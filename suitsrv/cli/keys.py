"""``suitsrv keygen`` and loading key files for the manifest commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from manifests.cose import (
    Algorithm,
    SigningKey,
    TrustAnchor,
    anchor_from_cose_key,
    anchor_from_pem,
    generate_signing_key,
    hmac_anchor,
    private_pem,
    public_pem,
    signing_key_from_pem,
)
from manifests.errors import ManifestError

__all__ = ["ALGORITHMS", "UsageError", "add_keygen", "load_signing_key", "load_trust"]

#: Names accepted on the command line.
ALGORITHMS = {
    "ES256": Algorithm.ES256,
    "ESP256": Algorithm.ESP256,
    "EdDSA": Algorithm.EDDSA,
    "Ed25519": Algorithm.ED25519,
}


class UsageError(Exception):
    """A command-line mistake: exit status 2 with this message."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from exc


def load_signing_key(path: str, algorithm: str | None) -> SigningKey:
    alg = ALGORITHMS[algorithm] if algorithm else None
    try:
        return signing_key_from_pem(_read(path, "key"), algorithm=alg)
    except (ManifestError, ValueError) as exc:
        raise UsageError(f"{path}: not a usable signing key: {exc}") from exc


def load_trust(paths: list[str], mac_keys: list[str], algorithms: list[str]) -> list[TrustAnchor]:
    """Trust anchors from PEM public keys or COSE_Key files, and HMAC keys given in hex."""
    algs = [ALGORITHMS[a] for a in algorithms] or None
    anchors: list[TrustAnchor] = []
    for path in paths:
        data = _read(path, "trust anchor")
        try:
            if b"-----BEGIN" in data:
                anchors.append(anchor_from_pem(data, name=path, algorithms=algs))
            else:
                anchors.append(anchor_from_cose_key(data, name=path))
        except (ManifestError, ValueError) as exc:
            raise UsageError(f"{path}: not a usable trust anchor: {exc}") from exc
    for i, text in enumerate(mac_keys):
        try:
            anchors.append(hmac_anchor(bytes.fromhex(text), name=f"mac-key-{i + 1}"))
        except (ManifestError, ValueError) as exc:
            raise UsageError(f"--mac-key {i + 1}: {exc}") from exc
    if not anchors:
        raise UsageError("give at least one --trust or --mac-key")
    return anchors


def _keygen(args: argparse.Namespace) -> int:
    key = generate_signing_key(ALGORITHMS[args.alg])
    private, public = Path(f"{args.output}.priv.pem"), Path(f"{args.output}.pub.pem")
    for path in (private, public):
        if path.exists() and not args.force:
            raise UsageError(f"{path} exists (use --force to overwrite)")
    # The private key is created 0600 from the start, never world-readable for a moment.
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem(key))
    public.write_bytes(public_pem(key))
    print(f"wrote {private} (keep it secret) and {public} ({args.alg})")
    return 0


def add_keygen(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("keygen", help="generate a manifest signing key pair (PEM)")
    parser.add_argument("--alg", choices=sorted(ALGORITHMS), default="ES256")
    parser.add_argument("-o", "--output", required=True, metavar="NAME",
                        help="writes NAME.priv.pem and NAME.pub.pem")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.set_defaults(run=_keygen)
