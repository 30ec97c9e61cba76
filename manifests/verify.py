"""verify_envelope: authenticate a parsed SUIT_Envelope against trust anchors.

What is checked, in order (manifest-37 §8.3, §8.4.12; trust-domains-12 §5.7):

1. The SUIT_Digest in the authentication wrapper equals the digest of the **bstr-wrapped**
   manifest: the CBOR byte-string head plus the manifest bytes as received.
2. Authentication blocks (COSE_Sign1 / COSE_Mac0) carry a detached payload; the payload is the
   bstr-wrapped SUIT_Digest exactly as received. The algorithm must be listed in the trust
   anchor's record and equal the protected header's (cose.verify_cose).
   Policy for several blocks (docs/adr/0002-several-authentication-blocks.md): the envelope is
   authentic when at least one block verifies under a trusted anchor. All blocks cover the same
   SUIT_Digest, so a block we cannot verify (another signer, a newer algorithm during a
   transition) cannot change what was authenticated; it is reported, not trusted.
3. Every severable member carried in the envelope matches the digest the manifest holds for it
   (digest over the bstr-wrapped member). Members that are absent are allowed.
4. Integrated dependencies are verified as envelopes in their own right, with the same anchors.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import _cbor
from .cose import TrustAnchor, verify_cose
from .digest import Digest, hash_bytes
from .errors import VerificationError
from .model import Envelope, Manifest

__all__ = ["VerifiedManifest", "verify_envelope"]


@dataclass(frozen=True)
class VerifiedManifest:
    """An authenticated envelope. Its identity is the manifest digest; ``raw`` holds the exact
    bytes received, which are what a server stores and serves."""

    envelope: Envelope
    digest: Digest
    signers: tuple[str, ...]
    unverified_blocks: tuple[str, ...]
    dependencies: Mapping[str, VerifiedManifest]

    @property
    def raw(self) -> bytes:
        return self.envelope.raw

    @property
    def manifest(self) -> Manifest:
        return self.envelope.manifest

    @property
    def sequence_number(self) -> int:
        return self.envelope.manifest.sequence_number

    @property
    def identity(self) -> str:
        """Hex manifest digest: the key for deduplication, rollback and report mapping."""
        return self.digest.hex


def verify_envelope(envelope: Envelope, trust: Sequence[TrustAnchor]) -> VerifiedManifest:
    """Authenticate ``envelope`` or raise VerificationError naming the first failure."""
    digest = envelope.digest
    computed = hash_bytes(digest.algorithm, _cbor.wrap_bstr(envelope.manifest_raw))
    if not hmac.compare_digest(computed, digest.value):
        raise VerificationError(
            "manifest digest mismatch: the authentication wrapper says "
            f"{digest.hex}, the bstr-wrapped manifest hashes to {computed.hex()}"
        )
    if not envelope.auth_blocks and not envelope.unparsed_blocks:
        raise VerificationError("no authentication block (unsigned envelope)")
    signers: list[str] = []
    failures: list[str] = [f"unreadable block: {reason}" for reason in envelope.unparsed_blocks]
    for index, block in enumerate(envelope.auth_blocks, 1):
        try:
            anchor = verify_cose(block, trust, detached_payload=envelope.digest_raw)
        except VerificationError as exc:
            failures.append(f"block {index}: {exc}")
        else:
            signers.append(anchor.name)
    if not signers:
        raise VerificationError("no authentication block verifies: " + "; ".join(failures))
    manifest = envelope.manifest
    for key, member in envelope.members.items():
        if not manifest.severed[key].matches(_cbor.wrap_bstr(member)):
            raise VerificationError(
                f"severable member {int(key)} ({key.name.lower()}) does not match its digest"
            )
    dependencies: dict[str, VerifiedManifest] = {}
    for name, dependency in envelope.integrated_dependencies.items():
        try:
            dependencies[name] = verify_envelope(dependency, trust)
        except VerificationError as exc:
            raise VerificationError(f"integrated dependency {name!r}: {exc}") from exc
    return VerifiedManifest(
        envelope=envelope,
        digest=Digest(digest.algorithm, computed),
        signers=tuple(signers),
        unverified_blocks=tuple(failures),
        dependencies=dependencies,
    )
