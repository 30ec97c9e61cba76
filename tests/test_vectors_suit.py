"""Every public SUIT vector agrees with its expected verdict (../shared/vectors/suit/index.json).

Trust store = the keys listed in the index (README of the vectors): EC P-256 keys for ES256 and
ESP256, the HMAC key for COSE_Mac0. Parametrised by file name so a failure names the vector.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from manifests.cose import TrustAnchor, anchor_from_pem, hmac_anchor, parse_encryption_info
from manifests.errors import DecodeError, VerificationError
from manifests.parse import parse_envelope
from manifests.report import parse_report
from manifests.verify import verify_envelope

from .conftest import suit_index

_INDEX = suit_index()
_CHECKED = {"ACCEPT", "REJECT", "PARSE-OK"}
_CASES = [v for v in _INDEX["vectors"] if v["expected"]["verdict"] in _CHECKED]


# Reason classes: (pattern in the index's reason, pattern in our message).
_REASONS = {
    "unsigned": (r"no authentication block \(unsigned\)", r"no authentication block \(unsigned"),
    "legacy": (
        r"unknown manifest keys \[17\]",
        r"unknown manifest keys \[17\]: 17 = .*drafts -17\.\.-27",
    ),
    "digest": (r"manifest digest MISMATCH", r"manifest digest"),
    "severable": (r"severable member \d+ digest mismatch", r"severable member \d+ .*digest"),
    "sequence": (r"sequence number not uint", r"sequence-number must be an unsigned"),
    "no-valid-block": (r"no valid authentication block", r"no authentication block verifies"),
}
# What the index cannot see (its README: non-canonical maps, duplicate keys, unknown commands,
# trailing items, missing members) but a strict parser must refuse.
_STRICT_ONLY = r"canonical order|duplicate map key|non-shortest|unknown SUIT|trailing|is missing"


def _reason_classes(reasons: list[str]) -> set[str]:
    found = set()
    for reason in reasons:
        for name, (theirs, _) in _REASONS.items():
            if re.search(theirs, reason):
                found.add(name)
    return found


def _our_class(message: str) -> str:
    for name, (_, ours) in _REASONS.items():
        if re.search(ours, message):
            return name
    return "strict" if re.search(_STRICT_ONLY, message) else "other"


def _trust(root: Path) -> list[TrustAnchor]:
    anchors: list[TrustAnchor] = []
    for name, key in _INDEX["keys"].items():
        data = (root / key["file"]).read_bytes()
        if key["kind"] == "ec-p256":
            anchors.append(anchor_from_pem(data, name=name))
        elif key["kind"].startswith("HMAC"):
            anchors.append(hmac_anchor(bytes.fromhex(data.decode().strip()), name=name))
    return anchors


def test_index_lists_vectors(suit_vectors: Path) -> None:
    assert len(_CASES) >= 90, "the SUIT vector index is unexpectedly small"


@pytest.mark.parametrize("case", _CASES, ids=[c["file"] for c in _CASES])
def test_vector(case: dict[str, Any], suit_vectors: Path) -> None:
    path = suit_vectors / case["file"]
    assert path.is_file(), f"vector {case['file']} is missing"
    data = path.read_bytes()
    expected = case["expected"]
    if case["format"] == "SUIT_Envelope":
        trust = _trust(suit_vectors)
        if expected["verdict"] == "ACCEPT":
            verified = verify_envelope(parse_envelope(data), trust)
            facts = case["facts"]
            assert verified.raw == data
            assert verified.identity == facts["manifest_digest_value"]
            assert verified.sequence_number == facts["sequence_number"]
            signer = expected.get("reasons") or [b["result"] for b in facts["auth_blocks"]]
            assert any(s.endswith(verified.signers[0]) for s in signer)
        else:
            with pytest.raises((DecodeError, VerificationError)) as info:
                verify_envelope(parse_envelope(data), trust)
            ours = _our_class(str(info.value))
            expected_classes = _reason_classes(expected["reasons"])
            assert ours in expected_classes | {"strict"}, (
                f"rejected for {str(info.value)!r}, expected one of {expected['reasons']}"
            )
    elif case["format"] == "SUIT_Encryption_Info":
        encryption = parse_encryption_info(data)
        assert encryption.raw == data and encryption.recipient_algorithms
    elif case["format"] == "SUIT_Report":
        report = parse_report(data)
        assert report.manifest_digest.hex == expected["references_manifest_digest"]
        assert report.result.success is True
    else:
        pytest.fail(f"no check for format {case['format']}")
