"""API findings already reported and waiting for a fix outside fuzz/ (BENCHMARKS.md "Fuzzing").

Each entry is an (operation, status) that the service answers but /openapi.json does not list
for that operation (schemathesis ST103). The responses are correct 4xx problems; the OpenAPI
``responses`` of the routes (suitsrv/web/*.py, owned by the web layer) lack them. A 5xx is
never listed here: the API smoke fails on any server error. Remove an entry with its fix.
"""

from __future__ import annotations

__all__ = ["KNOWN_UNDOCUMENTED"]

_JSON_BODY_ROUTES = (  # read_json (suitsrv/web/bodies.py:17) answers 415 to another Content-Type
    "POST /v1/operator/vendors",  # suitsrv/web/operator.py:158
    "POST /v1/operator/vendors/{name}/anchors",  # suitsrv/web/operator.py:163
    "POST /v1/operator/tokens",  # suitsrv/web/operator.py:166
    "POST /v1/operator/devices",  # suitsrv/web/operator.py:171
    "POST /v1/vendor/devices",  # suitsrv/web/vendor.py:176
    "POST /v1/vendor/advisories",  # suitsrv/web/gateway.py:189
    "POST /v1/gateway/devices",  # suitsrv/web/gateway.py:169
    "POST /v1/gateway/attestation/challenge",  # suitsrv/web/attestation.py:143
    "PUT /v1/gateway/webhook",  # suitsrv/web/events.py:188
    "POST /v1/device/attestation/enroll",  # suitsrv/web/attestation.py:152
    "POST /v1/device/attestation/activate",  # suitsrv/web/attestation.py:156
    "POST /v1/device/config/restored",  # suitsrv/web/config_vault.py:84
)
_BAD_REQUEST = (  # a malformed body or path parameter: 400 problem, not documented
    "GET /v1/payloads/{sha256}",  # suitsrv/web/device.py:129 (not a hex SHA-256)
    "HEAD /v1/payloads/{sha256}",  # suitsrv/web/device.py:132
    "POST /v1/device/reports",  # suitsrv/web/device.py:135 (report not CBOR)
    "POST /v1/gateway/attestation/challenge",  # suitsrv/web/attestation.py:143
    "POST /v1/device/attestation/enroll",  # suitsrv/web/attestation.py:152
    "POST /v1/device/attestation/activate",  # suitsrv/web/attestation.py:156
    "POST /v1/device/config/restored",  # suitsrv/web/config_vault.py:84
)

KNOWN_UNDOCUMENTED: frozenset[tuple[str, int]] = frozenset(
    [(op, 415) for op in _JSON_BODY_ROUTES] + [(op, 400) for op in _BAD_REQUEST]
)
