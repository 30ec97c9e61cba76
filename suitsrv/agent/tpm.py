"""The device's TPM through tpm2-pytss (ESAPI), opened from a TCTI string: ``swtpm:...`` for
the simulator, ``device:/dev/tpmrm0`` on hardware (notes/tpm-stack.md).

Keys are primaries created from fixed templates each time the TPM is opened, so nothing is
made persistent and the same TPM always yields the same keys (TPM 2.0 Part 1 §26.2: a primary
key is derived from the hierarchy's seed and the template):

* the EK from the TCG EK Credential Profile low-range template (``EK-ECC256`` by default;
  a template or nonce the manufacturer put in NV wins, as the profile says);
* the AK, a restricted ECDSA P-256 signing key, as a primary under the **endorsement**
  hierarchy: an AK under the owner hierarchy gets its quotes' resetCount, restartCount and
  firmwareVersion obfuscated (TPM 2.0 Part 1 §36.7), which the verifier needs.

Without a resource manager (a bare swtpm, ``/dev/tpm0``) transient objects and sessions
outlive the process that made them and the TPM has only three slots of each: ``open`` flushes
whatever is left over, and everything created here is flushed on the way out. The agent must
then be the TPM's only user.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final

from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HT,
    TPM2_SE,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PUBLIC,
    TPMA_OBJECT,
    TPML_DIGEST_VALUES,
    TPMT_HA,
    TPMT_PUBLIC,
    TPMT_SYM_DEF,
    TPMU_HA,
    TSS2_Exception,
)
from tpm2_pytss.utils import NoSuchIndex, NVReadEK, create_ek_template

from .errors import TpmError

__all__ = ["AK_TEMPLATE", "Quote", "Tpm"]

#: TPM 2.0 Part 2 §8.3: a restricted signing key that never leaves this TPM.
_AK_ATTRS: Final = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)  # fmt: skip
AK_TEMPLATE: Final = "ecc256:ecdsa-sha256:null"
_LEFTOVERS: Final = (TPM2_HT.TRANSIENT, TPM2_HT.LOADED_SESSION)


@dataclass(frozen=True)
class Quote:
    """TPM2_Quote output: the marshalled TPMS_ATTEST (the signed bytes), the TPMT_SIGNATURE
    and the PCR value read right after."""

    attest: bytes
    signature: bytes
    pcr_value: bytes


def _handles(esapi: ESAPI, kind: int) -> list[int]:
    _, data = esapi.get_capability(TPM2_CAP.HANDLES, kind << 24, 64)
    # Iterate the TPML (it honours ``count``); the array behind it is fixed-size and mostly 0.
    return [int(h) for h in data.data.handles]


class Tpm:
    """An open TPM with the agent's EK and AK made on first use (see the module docstring)."""

    def __init__(self, esapi: ESAPI, pcr: int, ek_template: str) -> None:
        self._esapi = esapi
        self._pcr = pcr
        self._pcr_tr = getattr(ESYS_TR, f"PCR{pcr}")
        self._ek_template = ek_template
        self._created: list[Any] = []
        self._ek: tuple[Any, bytes] | None = None
        self._ak: tuple[Any, bytes] | None = None

    @classmethod
    @contextmanager
    def open(cls, tcti: str, *, pcr: int = 16, ek_template: str = "EK-ECC256") -> Iterator[Tpm]:
        """Open the TPM behind ``tcti``; on exit flush what was created and close it."""
        try:
            esapi = ESAPI(tcti)
        except (TSS2_Exception, ValueError, RuntimeError) as exc:
            raise TpmError(f"cannot open the TPM at {tcti!r}: {exc}") from exc
        tpm = cls(esapi, pcr, ek_template)
        try:
            tpm._run(tpm._flush_leftovers)
            yield tpm
        finally:
            for handle in reversed(tpm._created):
                with suppress(TSS2_Exception):  # already gone (TPM restarted): nothing to free
                    esapi.flush_context(handle)
            esapi.close()

    def _run(self, command: Callable[[], Any]) -> Any:
        try:
            return command()
        except TSS2_Exception as exc:
            raise TpmError(f"TPM: {exc}") from exc

    def _flush_leftovers(self) -> None:
        for kind in _LEFTOVERS:
            for handle in _handles(self._esapi, kind):
                self._esapi.flush_context(self._esapi.tr_from_tpmpublic(handle))

    def _nv_reader(self) -> Callable[[int], bytes]:
        # Ask which NV indices exist first: NVReadEK probes with TR_FromTPMPublic, and the
        # TSS logs every miss as an error on stderr.
        defined = set(_handles(self._esapi, TPM2_HT.NV_INDEX))
        read = NVReadEK(self._esapi)

        def reader(index: int) -> bytes:
            if int(index) not in defined:
                raise NoSuchIndex(index)
            data: bytes = read(index)
            return data

        return reader

    def _primary(self, template: Any) -> tuple[Any, bytes]:
        handle, public = self._esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)[:2]
        self._created.append(handle)
        return handle, bytes(public.marshal())

    def _ek_handle(self) -> tuple[Any, bytes]:
        if self._ek is None:

            def make() -> tuple[Any, bytes]:
                _, template = create_ek_template(self._ek_template, self._nv_reader())
                return self._primary(template)

            self._ek = self._run(make)
        return self._ek

    def _ak_handle(self) -> tuple[Any, bytes]:
        if self._ak is None:
            template = TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.parse(AK_TEMPLATE, _AK_ATTRS))
            self._ak = self._run(lambda: self._primary(template))
        return self._ak

    def ek_public(self) -> bytes:
        """The EK's TPM2B_PUBLIC, marshalled (what the manufacturer registers)."""
        return self._ek_handle()[1]

    def ak_public(self) -> bytes:
        """The AK's TPM2B_PUBLIC, marshalled."""
        return self._ak_handle()[1]

    def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential (Part 3 §12.5): the secret the service wrapped for our EK
        and AK Name. The EK's policy is PolicySecret(TPM_RH_ENDORSEMENT) (EK profile, low
        range), satisfied in a policy session."""
        ek, _ = self._ek_handle()
        ak, _ = self._ak_handle()
        esapi = self._esapi

        def run() -> bytes:
            blob = TPM2B_ID_OBJECT.unmarshal(credential_blob)[0]
            secret = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)[0]
            session = esapi.start_auth_session(
                ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256,
            )  # fmt: skip
            try:
                esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
                digest = esapi.activate_credential(
                    ak, ek, blob, secret, session1=ESYS_TR.PASSWORD, session2=session
                )
                return bytes(digest)
            finally:
                esapi.flush_context(session)

        try:
            result: bytes = self._run(run)
        except (ValueError, TypeError) as exc:
            raise TpmError(f"the credential challenge does not unmarshal: {exc}") from exc
        return result

    def reset_pcr(self) -> None:
        """TPM2_PCR_Reset of the agent's PCR (allowed at locality 0 for 16 and 23)."""
        self._run(lambda: self._esapi.pcr_reset(self._pcr_tr))

    def measure(self, digest: bytes) -> None:
        """Extend the agent's PCR (SHA-256 bank) with ``digest``."""
        if len(digest) != hashlib.sha256().digest_size:
            raise RuntimeError("measure() takes a SHA-256 digest")
        values = TPML_DIGEST_VALUES(
            [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))]
        )
        self._run(lambda: self._esapi.pcr_extend(self._pcr_tr, values))

    def read_pcr(self) -> bytes:
        """The agent's PCR in the SHA-256 bank."""

        def run() -> bytes:
            # Keep the TPML_DIGEST bound while reading: tpm2-pytss frees its C memory with it.
            _, _, values = self._esapi.pcr_read(f"sha256:{self._pcr}")
            return bytes(values.digests[0])

        result: bytes = self._run(run)
        return result

    def quote(self, nonce: bytes) -> Quote:
        """TPM2_Quote over the agent's PCR with ``nonce`` as qualifying data, signed by the AK."""
        ak, _ = self._ak_handle()

        def run() -> Quote:
            attest, signature = self._esapi.quote(ak, f"sha256:{self._pcr}", nonce)
            return Quote(bytes(attest), bytes(signature.marshal()), b"")

        quote: Quote = self._run(run)
        return Quote(quote.attest, quote.signature, self.read_pcr())
