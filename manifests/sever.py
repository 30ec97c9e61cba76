"""Severing and re-attaching envelope members (manifest-37 §8.4.12, §8.5).

A severable member whose digest the manifest holds may travel in the envelope or not. Removing
it (``sever``) or putting it back (``reattach``) changes the envelope, never the manifest or
its authentication wrapper, so the signatures and the manifest's identity stay as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from . import _cbor
from .build import encode_envelope
from .errors import DecodeError, VerificationError
from .model import Envelope
from .numbers import ManifestKey
from .parse import parse_envelope

__all__ = ["reattach", "sever"]


def _env(envelope: bytes | Envelope) -> Envelope:
    return parse_envelope(envelope) if isinstance(envelope, bytes | bytearray) else envelope


def _rebuild(env: Envelope, members: Mapping[ManifestKey, bytes]) -> bytes:
    integrated = dict(env.integrated_payloads)
    integrated.update({name: dep.raw for name, dep in env.integrated_dependencies.items()})
    return encode_envelope(
        tagged=env.tagged,
        auth_wrapper=_cbor.loads(env.auth_wrapper_raw, what="auth wrapper"),  # type: ignore[arg-type]
        manifest_raw=env.manifest_raw,
        members=members,
        integrated=integrated,
    )


def sever(envelope: bytes | Envelope, keys: Iterable[ManifestKey] | None = None) -> bytes:
    """Drop the named severable members (all when ``keys`` is None) from the envelope."""
    env = _env(envelope)
    drop = set(env.members) if keys is None else set(keys)
    return _rebuild(env, {k: v for k, v in env.members.items() if k not in drop})


def reattach(envelope: bytes | Envelope, members: Mapping[ManifestKey, bytes]) -> bytes:
    """Put severed members back: each must match the digest the manifest holds for it."""
    env = _env(envelope)
    merged = dict(env.members)
    for key, member in members.items():
        digest = env.manifest.severed.get(key)
        if digest is None:
            raise DecodeError(f"member {int(key)} is not severable in this manifest")
        if not digest.matches(_cbor.wrap_bstr(member)):
            raise VerificationError(f"member {int(key)} does not match the manifest's digest")
        merged[key] = member
    return _rebuild(env, merged)
