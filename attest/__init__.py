"""The RATS verifier ring: TPM quotes, event logs, EAT/PSA evidence, EAR results.

Pure and synchronous: bytes and values in, values out or a typed error (DESIGN.md).
Built in the attestation issue; nothing lives here yet.
"""

__all__: list[str] = []
