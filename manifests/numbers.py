"""The SUIT code points, with the specs' names.

Sources: draft-ietf-suit-manifest-37 Appendix A (CDDL), trust-domains-12 §8, update-management-12
§9, firmware-encryption-26 §7, report-20 §4. Only the numbers listed here are accepted by the
parser: anything else is an unknown key, command or parameter and is refused (manifest-37 §6.1).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "Command",
    "CommonKey",
    "DigestAlg",
    "EnvelopeKey",
    "ManifestKey",
    "Parameter",
    "ReportKey",
    "ReportReason",
    "TextComponentKey",
    "TextKey",
    "VersionComparison",
]


class EnvelopeKey(IntEnum):
    """manifest-37 §8.2 SUIT_Envelope; 1 (delegation) was removed from trust-domains in 2024."""

    AUTHENTICATION_WRAPPER = 2
    MANIFEST = 3


class ManifestKey(IntEnum):
    """manifest-37 §8.4 plus trust-domains-12 (5, 15, 18, 24) and update-management-12 (6, 14)."""

    MANIFEST_VERSION = 1
    MANIFEST_SEQUENCE_NUMBER = 2
    COMMON = 3
    REFERENCE_URI = 4
    MANIFEST_COMPONENT_ID = 5
    SET_VERSION = 6
    VALIDATE = 7
    LOAD = 8
    INVOKE = 9
    COSWID = 14
    DEPENDENCY_RESOLUTION = 15
    PAYLOAD_FETCH = 16
    CANDIDATE_VERIFICATION = 18
    INSTALL = 20
    TEXT = 23
    UNINSTALL = 24


#: Members that may be severed: present in the manifest as a SUIT_Digest and in the envelope
#: under the same key (manifest-37 §8.4.12; trust-domains-12 §5.3, §5.4; update-management §5).
SEVERABLE = frozenset(
    {
        ManifestKey.PAYLOAD_FETCH,
        ManifestKey.INSTALL,
        ManifestKey.TEXT,
        ManifestKey.COSWID,
        ManifestKey.DEPENDENCY_RESOLUTION,
        ManifestKey.CANDIDATE_VERIFICATION,
    }
)

#: Members holding a bstr-wrapped SUIT_Command_Sequence.
COMMAND_SEQUENCES = frozenset(
    {
        ManifestKey.VALIDATE,
        ManifestKey.LOAD,
        ManifestKey.INVOKE,
        ManifestKey.PAYLOAD_FETCH,
        ManifestKey.INSTALL,
        ManifestKey.DEPENDENCY_RESOLUTION,
        ManifestKey.CANDIDATE_VERIFICATION,
        ManifestKey.UNINSTALL,
    }
)


class CommonKey(IntEnum):
    """manifest-37 §8.4.5 SUIT_Common, trust-domains-12 §5.1 (dependencies)."""

    DEPENDENCIES = 1
    COMPONENTS = 2
    SHARED_SEQUENCE = 4


class Command(IntEnum):
    """Conditions and directives (manifest-37 §8.4.9/§8.4.10, trust-domains-12 §6,
    update-management-12 §7). Negative numbers are custom commands (§8.4.10.11)."""

    VENDOR_IDENTIFIER = 1
    CLASS_IDENTIFIER = 2
    IMAGE_MATCH = 3
    USE_BEFORE = 4
    COMPONENT_SLOT = 5
    CHECK_CONTENT = 6
    DEPENDENCY_INTEGRITY = 7
    IS_DEPENDENCY = 8
    PROCESS_DEPENDENCY = 11
    SET_COMPONENT_INDEX = 12
    ABORT = 14
    TRY_EACH = 15
    WRITE = 18
    SET_PARAMETERS = 19
    OVERRIDE_PARAMETERS = 20
    FETCH = 21
    COPY = 22
    INVOKE = 23
    DEVICE_IDENTIFIER = 24
    IMAGE_NOT_MATCH = 25
    MINIMUM_BATTERY = 26
    UPDATE_AUTHORIZED = 27
    VERSION = 28
    WAIT = 29
    SWAP = 31
    RUN_SEQUENCE = 32
    UNLINK = 33
    OVERRIDE_MULTIPLE = 34
    COPY_PARAMS = 35


class Parameter(IntEnum):
    """SUIT_Parameters (manifest-37 §8.4.8, update-management-12 §6, firmware-encryption-26
    §7). Negative numbers are custom parameters."""

    VENDOR_IDENTIFIER = 1
    CLASS_IDENTIFIER = 2
    IMAGE_DIGEST = 3
    USE_BEFORE = 4
    COMPONENT_SLOT = 5
    STRICT_ORDER = 12
    SOFT_FAILURE = 13
    IMAGE_SIZE = 14
    CONTENT = 18
    ENCRYPTION_INFO = 19
    URI = 21
    SOURCE_COMPONENT = 22
    INVOKE_ARGS = 23
    DEVICE_IDENTIFIER = 24
    FETCH_ARGUMENTS = 25
    MINIMUM_BATTERY = 26
    UPDATE_PRIORITY = 27
    VERSION = 28
    WAIT_INFO = 29
    COMPONENT_METADATA = 30


class DigestAlg(IntEnum):
    """suit-cose-hash-algs (manifest-37 §8.3; COSE IANA hash algorithm ids)."""

    SHA256 = -16
    SHAKE128 = -18
    SHA384 = -43
    SHA512 = -44
    SHAKE256 = -45


class TextKey(IntEnum):
    """SUIT_Text_Keys (manifest-37 §8.4.4)."""

    MANIFEST_DESCRIPTION = 1
    UPDATE_DESCRIPTION = 2
    MANIFEST_JSON_SOURCE = 3
    MANIFEST_YAML_SOURCE = 4


class TextComponentKey(IntEnum):
    """SUIT_Text_Component_Keys (manifest-37 §8.4.4, update-management-12 §5.3)."""

    VENDOR_NAME = 1
    MODEL_NAME = 2
    VENDOR_DOMAIN = 3
    MODEL_INFO = 4
    COMPONENT_DESCRIPTION = 5
    COMPONENT_VERSION = 6
    VERSION_REQUIRED = 7
    CURRENT_VERSION = 8


class VersionComparison(IntEnum):
    """suit-condition-version-comparison-types (update-management-12 §6.4)."""

    GREATER = 1
    GREATER_EQUAL = 2
    EQUAL = 3
    LESSER_EQUAL = 4
    LESSER = 5


class ReportKey(IntEnum):
    """SUIT_Report map keys (draft-ietf-suit-report-20 §4)."""

    NONCE = 2
    RECORDS = 3
    RESULT = 4
    RESULT_CODE = 5
    RESULT_RECORD = 6
    RESULT_REASON = 7
    CAPABILITY_REPORT = 8
    REFERENCE = 99


class ReportReason(IntEnum):
    """SUIT_Report_Reasons (draft-ietf-suit-report-20 §4.1)."""

    OK = 0
    CBOR_PARSE = 1
    COSE_UNSUPPORTED = 2
    ALG_UNSUPPORTED = 3
    UNAUTHORISED = 4
    COMMAND_UNSUPPORTED = 5
    COMPONENT_UNSUPPORTED = 6
    COMPONENT_UNAUTHORISED = 7
    PARAMETER_UNSUPPORTED = 8
    SEVERING_UNSUPPORTED = 9
    CONDITION_FAILED = 10
    OPERATION_FAILED = 11
    INVOKE_PENDING = 12
