"""Decoding of command sequences and parameters (manifest-37 §8.4.6-§8.4.10).

CDDL implemented (manifest-37 Appendix A, with the trust-domains-12 and update-management-12
extensions)::

    SUIT_Command_Sequence = [ + ( SUIT_Condition // SUIT_Directive // SUIT_Command_Custom ) ]
    SUIT_Shared_Sequence  = [ + ( SUIT_Condition // SUIT_Shared_Commands ) ]
    SUIT_Rep_Policy = uint .bits suit-reporting-bits
    IndexArg = uint / true / [+uint]
    SUIT_Directive_Try_Each_Argument = [ 2* bstr .cbor SUIT_Command_Sequence, ?nil ]
    $$SUIT_Parameters  (see Parameters in model.py)

Unknown command and parameter numbers are refused (manifest-37 §6.1: a processor rejects what
it does not understand; update-management-12 §7: unknown extension commands cause rejection).
"""

from __future__ import annotations

import uuid
from typing import Final

from . import _cbor
from .cose import parse_encryption_info
from .digest import parse_digest
from .errors import DecodeError, UnsupportedError
from .model import (
    CommandSequence,
    CopyParams,
    CustomCommand,
    OverrideMultiple,
    Parameters,
    Pen,
    PolicyCommand,
    ReportingPolicy,
    RunSequence,
    SetComponentIndex,
    SetParameters,
    Step,
    TryEach,
    VendorId,
    VersionMatch,
)
from .numbers import Command, Parameter, VersionComparison

__all__ = ["parse_sequence"]

_POLICY_COMMANDS: Final = frozenset(
    {
        Command.VENDOR_IDENTIFIER,
        Command.CLASS_IDENTIFIER,
        Command.IMAGE_MATCH,
        Command.USE_BEFORE,
        Command.COMPONENT_SLOT,
        Command.CHECK_CONTENT,
        Command.DEPENDENCY_INTEGRITY,
        Command.IS_DEPENDENCY,
        Command.PROCESS_DEPENDENCY,
        Command.ABORT,
        Command.WRITE,
        Command.FETCH,
        Command.COPY,
        Command.INVOKE,
        Command.DEVICE_IDENTIFIER,
        Command.IMAGE_NOT_MATCH,
        Command.MINIMUM_BATTERY,
        Command.UPDATE_AUTHORIZED,
        Command.VERSION,
        Command.WAIT,
        Command.SWAP,
        Command.UNLINK,
    }
)
#: Directives a shared sequence may not hold: SUIT_Shared_Commands (manifest-37 §8.4.5) are
#: only set-component-index, run-sequence, try-each and override-parameters.
_ACTIONS: Final = frozenset(
    {
        Command.SET_PARAMETERS,
        Command.OVERRIDE_MULTIPLE,
        Command.COPY_PARAMS,
        Command.WRITE,
        Command.FETCH,
        Command.COPY,
        Command.INVOKE,
        Command.SWAP,
        Command.PROCESS_DEPENDENCY,
        Command.UNLINK,
        Command.WAIT,
    }
)
_MAX_NESTING: Final = 8
#: Tags of foreign documents embedded in manifests: dates (#6.1) and UUIDs (#6.37).
_FOREIGN_TAGS: Final = frozenset({1, 37})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _uint(value: object, what: str) -> int:
    if not _is_int(value) or value < 0:  # type: ignore[operator]
        raise DecodeError(f"{what} must be an unsigned integer")
    return value  # type: ignore[return-value]


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise DecodeError(f"{what} must be a byte string")
    return value


def _uuid(value: object, what: str) -> uuid.UUID:
    raw = _bytes(value, what)
    if len(raw) != 16:
        raise DecodeError(f"{what} must be a 16-byte RFC 4122 UUID, got {len(raw)} bytes")
    return uuid.UUID(bytes=raw)


def _vendor_id(value: object) -> VendorId:
    if isinstance(value, _cbor.Tag):
        if value.number != 112 or not isinstance(value.value, bytes) or not value.value:
            raise DecodeError("vendor-id tag must be #6.112(bstr), a CBOR PEN")
        return Pen(value.value)
    return _uuid(value, "vendor-id")


def _int_list(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(_is_int(v) for v in value):
        raise DecodeError(f"{what} must be a non-empty array of integers")
    return tuple(value)


def _version_match(raw: bytes) -> VersionMatch:
    value = _cbor.loads(raw, what="suit-parameter-version")
    if not isinstance(value, list) or len(value) != 2:
        raise DecodeError("suit-parameter-version must be [comparison-type, [+int]]")
    try:
        if not _is_int(value[0]):
            raise ValueError
        comparison = VersionComparison(value[0])
    except ValueError:
        raise DecodeError(f"unknown version comparison type {value[0]!r}") from None
    return VersionMatch(comparison, _int_list(value[1], "version comparison value"))


def _int_keyed_map(
    raw: bytes, what: str, extra_tags: frozenset[int] = frozenset()
) -> dict[int, object]:
    value = _cbor.loads(raw, what=what, extra_tags=extra_tags)
    if not isinstance(value, dict) or not all(_is_int(k) for k in value):
        raise DecodeError(f"{what} must be a map with integer keys")
    return value


def _digest_param(value: object) -> object:
    raw = _bytes(value, "image-digest")
    return parse_digest(_cbor.loads(raw, what="image-digest"), "image-digest")


# Parameter number -> (field name, decoder). Decoders raise DecodeError on a wrong type.
_PARAMETERS: Final = {
    Parameter.VENDOR_IDENTIFIER: ("vendor_id", _vendor_id),
    Parameter.CLASS_IDENTIFIER: ("class_id", lambda v: _uuid(v, "class-id")),
    Parameter.IMAGE_DIGEST: ("image_digest", _digest_param),
    Parameter.USE_BEFORE: ("use_before", lambda v: _uint(v, "use-before")),
    Parameter.COMPONENT_SLOT: ("component_slot", lambda v: _uint(v, "component-slot")),
    Parameter.STRICT_ORDER: ("strict_order", lambda v: _bool(v, "strict-order")),
    Parameter.SOFT_FAILURE: ("soft_failure", lambda v: _bool(v, "soft-failure")),
    Parameter.IMAGE_SIZE: ("image_size", lambda v: _uint(v, "image-size")),
    Parameter.CONTENT: ("content", lambda v: _bytes(v, "content")),
    Parameter.ENCRYPTION_INFO: (
        "encryption_info",
        lambda v: parse_encryption_info(_bytes(v, "encryption-info")),
    ),
    Parameter.URI: ("uri", lambda v: _text(v, "uri")),
    Parameter.SOURCE_COMPONENT: ("source_component", lambda v: _uint(v, "source-component")),
    Parameter.INVOKE_ARGS: ("invoke_args", lambda v: _bytes(v, "invoke-args")),
    Parameter.DEVICE_IDENTIFIER: ("device_id", lambda v: _uuid(v, "device-id")),
    Parameter.FETCH_ARGUMENTS: ("fetch_arguments", lambda v: _bytes(v, "fetch-arguments")),
    Parameter.MINIMUM_BATTERY: ("minimum_battery", lambda v: _uint(v, "minimum-battery")),
    Parameter.UPDATE_PRIORITY: ("update_priority", lambda v: _int(v, "update-priority")),
    Parameter.VERSION: ("version", lambda v: _version_match(_bytes(v, "version"))),
    Parameter.WAIT_INFO: ("wait_info", lambda v: _int_keyed_map(_bytes(v, "wait-info"), "wait")),
    Parameter.COMPONENT_METADATA: (
        "component_metadata",
        # update-management-12 §6.9: times are #6.1(uint), actor ids may be #6.37(bstr) UUIDs.
        lambda v: _int_keyed_map(
            _bytes(v, "component-metadata"), "component-metadata", _FOREIGN_TAGS
        ),
    ),
}


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise DecodeError(f"{what} must be a boolean")
    return value


def _int(value: object, what: str) -> int:
    if not _is_int(value):
        raise DecodeError(f"{what} must be an integer")
    return value  # type: ignore[return-value]


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"{what} must be a text string")
    return value


def parse_parameters(value: object) -> Parameters:
    """``{+ $$SUIT_Parameters}`` from its decoded map."""
    if not isinstance(value, dict) or not value:
        raise DecodeError("parameters must be a non-empty map")
    fields: dict[str, object] = {}
    custom: dict[int, int | bool | str | bytes] = {}
    for key, item in value.items():
        if not _is_int(key):
            raise DecodeError(f"parameter key {key!r} is not an integer")
        if key < 0:
            if not isinstance(item, int | str | bytes):
                raise DecodeError(f"custom parameter {key} must be int/bool/tstr/bstr")
            custom[key] = item
            continue
        try:
            name, decode = _PARAMETERS[Parameter(key)]
        except (ValueError, KeyError):
            raise UnsupportedError(f"unknown SUIT parameter {key}") from None
        fields[name] = decode(item)
    return Parameters(custom=custom, **fields)  # type: ignore[arg-type]


def _index_arg(value: object) -> int | bool | tuple[int, ...]:
    if value is True:
        return True
    if _is_int(value) and value >= 0:  # type: ignore[operator]
        return value  # type: ignore[return-value]
    if isinstance(value, list) and value and all(_is_int(v) and v >= 0 for v in value):
        return tuple(value)
    raise DecodeError("set-component-index argument must be uint, true or [+uint]")


def _policy(value: object, command: Command) -> ReportingPolicy:
    policy = _uint(value, f"reporting policy of {command.name.lower()}")
    if policy > 15:
        raise DecodeError(f"reporting policy {policy} of {command.name.lower()} sets unknown bits")
    return ReportingPolicy(policy)


def parse_sequence(
    raw: bytes, *, what: str, shared: bool = False, depth: int = 0
) -> CommandSequence:
    """Decode a bstr-wrapped command sequence; ``raw`` is the bstr content as received."""
    if depth > _MAX_NESTING:
        raise DecodeError(f"{what}: command sequences nested deeper than {_MAX_NESTING}")
    value = _cbor.loads(raw, what=what)
    if not isinstance(value, list) or not value:
        raise DecodeError(f"{what} must be a non-empty array")
    if len(value) % 2:
        raise DecodeError(f"{what} must hold command/argument pairs (odd length {len(value)})")
    steps: list[Step] = []
    for i in range(0, len(value), 2):
        number, arg = value[i], value[i + 1]
        if not _is_int(number):
            raise DecodeError(f"{what}: command {number!r} is not an integer")
        steps.append(_step(number, arg, what=what, shared=shared, depth=depth))
    return CommandSequence(tuple(steps), raw)


def _step(number: int, arg: object, *, what: str, shared: bool, depth: int) -> Step:
    if number < 0:
        if shared:
            raise DecodeError(
                f"{what}: custom command {number} is not allowed in a shared sequence"
            )
        if not (arg is None or isinstance(arg, bytes | str) or _is_int(arg)):
            raise DecodeError(f"{what}: custom command {number} argument must be bstr/tstr/int/nil")
        return CustomCommand(number, arg)  # type: ignore[arg-type]
    try:
        command = Command(number)
    except ValueError:
        raise UnsupportedError(f"{what}: unknown SUIT command {number}") from None
    if shared and command in _ACTIONS:
        raise DecodeError(
            f"{what}: directive {command.name.lower()} is not allowed in a shared sequence"
        )
    if command in _POLICY_COMMANDS:
        return PolicyCommand(command, _policy(arg, command))
    if command is Command.SET_COMPONENT_INDEX:
        return SetComponentIndex(_index_arg(arg))
    if command in (Command.OVERRIDE_PARAMETERS, Command.SET_PARAMETERS):
        return SetParameters(command, parse_parameters(arg))
    if command is Command.TRY_EACH:
        if not isinstance(arg, list) or len(arg) < 2:
            raise DecodeError(f"{what}: try-each needs at least two sequences")
        empty_allowed = arg[-1] is None
        options = arg[:-1] if empty_allowed else arg
        if len(options) < 2:
            raise DecodeError(f"{what}: try-each needs at least two sequences")
        seqs = tuple(
            parse_sequence(
                _bytes(o, "try-each option"),
                what=f"{what}/try-each",
                shared=shared,
                depth=depth + 1,
            )
            for o in options
        )
        return TryEach(seqs, empty_allowed)
    if command is Command.RUN_SEQUENCE:
        inner = parse_sequence(
            _bytes(arg, "run-sequence"), what=f"{what}/run-sequence", shared=shared, depth=depth + 1
        )
        return RunSequence(inner)
    if command is Command.OVERRIDE_MULTIPLE:
        if not isinstance(arg, dict) or not arg:
            raise DecodeError(f"{what}: override-multiple needs {{+ uint => parameters}}")
        return OverrideMultiple(
            {_uint(k, "component index"): parse_parameters(v) for k, v in arg.items()}
        )
    # Command.COPY_PARAMS is the only one left.
    if not isinstance(arg, dict) or not arg:
        raise DecodeError(f"{what}: copy-params needs {{+ uint => [+int]}}")
    return CopyParams(
        {_uint(k, "component index"): _int_list(v, "copy-params") for k, v in arg.items()}
    )
