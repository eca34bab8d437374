"""The MQTT contract: one JSON Schema per payload (station/schemas/, also docs/schemas/), the topic ->
schema map, and the checks of a stranger's bytes.

Outbound schemas allow keys they do not name (consumers must tolerate additions); inbound ones
(commands, customs instructions, declarations) refuse them. `parse` is what the handler of an inbound
message calls: its ContractError names each problem with its JSON path, ready for an alarm.

Every schema has the `$id` https://schemas.screening.example/{schema id}.schema.json; the outbound ones
`$ref` `envelope.schema.json`, a file beside them. References resolve from the package's own files,
never the network. A `date-time` is checked by our own rule (jsonschema checks the format only with an
optional package installed): RFC 3339 with a zone, which `datetime.fromisoformat` always reads.

Cheap to import and pure: the schema files are read, and the validators built, once, on first use.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from referencing import Registry

BASE = "https://schemas.screening.example/"
ENVELOPE = "envelope.schema.json"
MAX_PAYLOAD = 256 * 1024  # bytes of an inbound message: far above any real command, instruction or declaration
MAX_PROBLEMS = 20  # named in a ContractError; the rest are counted

# schema id -> its file in station/schemas/
SCHEMAS: dict[str, str] = {
    "screening/v1/status": "status.schema.json",
    "screening/v1/birth": "birth.schema.json",
    "screening/v1/device-state": "device-state.schema.json",
    "screening/v1/alarm": "alarm.schema.json",
    "screening/v1/item-result": "item-result.schema.json",
    "screening/v1/item-alert": "item-alert.schema.json",
    "screening/v1/item-verdict": "item-verdict.schema.json",
    "screening/v1/ead-quality": "ead-quality.schema.json",
    "screening/v1/command-reply": "command-reply.schema.json",
    "customs/v1/screening-result": "customs-screening-result.schema.json",
    "screening/v1/command": "command.schema.json",
    "customs/v1/instruction": "customs-instruction.schema.json",
    "ead/v1/record": "ead-record.schema.json",
}
INBOUND = frozenset({"screening/v1/command", "customs/v1/instruction", "ead/v1/record"})

_LEVEL = r"[^/+#]+"
_ROOT = rf"screening/v1/{_LEVEL}/{_LEVEL}"
_TOPICS = tuple((re.compile(pattern), schema_id) for pattern, schema_id in (  # first match wins
    (rf"{_ROOT}/status", "screening/v1/status"),
    (rf"{_ROOT}/birth", "screening/v1/birth"),
    (rf"{_ROOT}/state/{_LEVEL}", "screening/v1/device-state"),
    (rf"{_ROOT}/alarms", "screening/v1/alarm"),
    (rf"{_ROOT}/items/result", "screening/v1/item-result"),
    (rf"{_ROOT}/items/alert", "screening/v1/item-alert"),
    (rf"{_ROOT}/items/verdict", "screening/v1/item-verdict"),
    (rf"{_ROOT}/ead/quality", "screening/v1/ead-quality"),
    (rf"{_ROOT}/customs/screening_result", "customs/v1/screening-result"),
    # before cmd/{name}: the default reply topic, and the reply topics central asks for under it, are
    # replies, not a command named `reply`
    (rf"{_ROOT}/cmd/reply(/[^+#]+)?", "screening/v1/command-reply"),
    (rf"{_ROOT}/cmd/{_LEVEL}", "screening/v1/command"),
    (rf"customs/v1/{_LEVEL}/instructions", "customs/v1/instruction"),
    (rf"ead/v1/{_LEVEL}/records", "ead/v1/record"),
))
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


def iso_time(at: float | None = None) -> str:
    """A time as every message carries it: RFC 3339 in UTC (now, without `at`: Unix seconds)."""
    return (datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)).isoformat()


class ContractError(ValueError):
    """A payload that breaks its schema; `problems` has one line per violation (`$.path: what is wrong`)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def schema_for_topic(topic: str) -> str | None:
    """The schema id of what is published on a concrete topic of the contract; None for any other topic."""
    return next((schema_id for pattern, schema_id in _TOPICS if pattern.fullmatch(topic)), None)


def load(file_name: str) -> dict[str, Any]:
    """One schema file of the package, e.g. `item-result.schema.json`."""
    return _load(file_name)


@cache
def _load(file_name: str) -> dict[str, Any]:
    text = resources.files("station").joinpath("schemas", file_name).read_text(encoding="utf-8")
    return dict(json.loads(text))


def problems(schema_id: str, payload: object) -> list[str]:
    """Each way `payload` breaks the schema, one line each, as `$.path: what is wrong`; empty when valid."""
    from jsonschema.exceptions import best_match

    found: dict[str, None] = {}  # in order, once each (the envelope and a schema may both require a key)
    for error in sorted(_validator(schema_id).iter_errors(payload), key=lambda e: str(e.json_path)):
        cause = best_match(_closest(error.context)) if error.context else error
        found[f"{cause.json_path}: {cause.message}"[:300]] = None
    return list(found)


def _closest(branches: list[Any]) -> list[Any]:
    """Of an anyOf/oneOf's failed branches, those of the value's own type (a date-time that is not one
    says so, rather than that it is not null)."""
    return [e for e in branches if e.validator != "type"] or branches


def parse(schema_id: str, payload: bytes) -> dict[str, Any]:
    """An inbound payload as a dict; ContractError naming what is wrong when it is not UTF-8, not one JSON
    object (NaN, Infinity, repeated keys and lone surrogates are not JSON a stranger may send), or breaks
    the schema."""
    if len(payload) > MAX_PAYLOAD:  # before decoding: a huge document is slow to decode
        raise ContractError([f"$: larger than {MAX_PAYLOAD} bytes ({len(payload)})"])
    data = _decode(payload)
    if not isinstance(data, dict):
        raise ContractError([f"$: expected a JSON object, got {_json_type(data)}"])
    if (where := _not_text(data)) is not None:
        raise ContractError([f"{where}: not valid text (a lone surrogate, which no store or log can encode)"])
    try:
        found = problems(schema_id, data)
    except RecursionError as err:
        raise ContractError(["$: nested too deeply"]) from err
    if found:
        more = len(found) - MAX_PROBLEMS
        raise ContractError(found[:MAX_PROBLEMS] + ([f"... and {more} more"] if more > 0 else []))
    return data


def _decode(payload: bytes) -> object:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ContractError([f"$: not UTF-8 (byte {err.start})"]) from err
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_repeats)
    except json.JSONDecodeError as err:
        raise ContractError([f"$: not JSON: {err.msg} at line {err.lineno} column {err.colno}"]) from err
    except RecursionError as err:
        raise ContractError(["$: not JSON we take: nested too deeply"]) from err
    except ValueError as err:  # ours below, or an integer of more digits than Python converts
        raise ContractError([f"$: not JSON we take: {err}"]) from err


def _not_text(data: object) -> str | None:
    """The path of the first key or string that is not Unicode text: JSON's \\u escapes can spell a lone
    surrogate ("\\ud800"), which UTF-8 (SQLite, a log, an MQTT reply) cannot encode. Walked without
    recursion: the document may be as deep as json.loads allows."""
    stack: list[tuple[str, object]] = [("$", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _is_text(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _is_text(key):
                    return path
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) < len(pairs):
        repeated, times = Counter(key for key, _ in pairs).most_common(1)[0]
        raise ValueError(f"the key {repeated!r} is given {times} times")
    return data


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def is_date_time(value: object) -> bool:
    """RFC 3339 `date-time`, the zone required (`Z` or `±hh:mm`); what is not a string is not ours to judge."""
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:  # 2026-02-30, 25:00...
        return False
    return True


@cache
def _validator(schema_id: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator, FormatChecker

    formats = FormatChecker(formats=())  # only the formats we check ourselves: none is silently skipped
    formats.checks("date-time")(is_date_time)
    return Draft202012Validator(load(SCHEMAS[schema_id]), registry=_registry(), format_checker=formats)


@cache
def _registry() -> Registry[Any]:
    """Every file of station/schemas/ under its `$id`, and under each schema id's folder: the files lie side
    by side, so from any schema a reference to `{name}.schema.json` is that file. Nothing is fetched: a
    reference to anything else is unresolvable."""
    from referencing import Registry, Resource

    folders = {BASE + schema_id.rsplit("/", 1)[0] + "/" for schema_id in SCHEMAS}
    files = [(name, Resource.from_contents(load(name))) for name in (*SCHEMAS.values(), ENVELOPE)]
    registry: Registry[Any] = Registry()
    return registry.with_resources([(str(resource.id()), resource) for _, resource in files]
                                   + [(folder + name, resource) for folder in folders for name, resource in files])
