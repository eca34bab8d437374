"""The MQTT contract: one JSON Schema per payload (station/schemas/, also docs/schemas/), and the checks.

Outbound schemas allow keys they do not name (consumers must tolerate additions); inbound ones
(commands, customs instructions) refuse them: a stranger's input. `parse` is what a handler of an
inbound message calls; its ContractError names each problem with its JSON path.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

BASE = "https://schemas.screening.example/"

# schema id -> file in station/schemas/
SCHEMAS = {
    "screening/v1/status": "status", "screening/v1/birth": "birth", "screening/v1/device-state": "device-state",
    "screening/v1/alarm": "alarm", "screening/v1/item-result": "item-result", "screening/v1/item-alert": "item-alert",
    "screening/v1/item-verdict": "item-verdict", "screening/v1/ead-quality": "ead-quality",
    "screening/v1/command": "command", "screening/v1/command-reply": "command-reply",
}

_LANE = r"screening/v1/[^/]+/[^/]+/"
_TOPICS = [  # concrete topic -> schema id, first match wins
    (_LANE + r"status", "screening/v1/status"), (_LANE + r"birth", "screening/v1/birth"),
    (_LANE + r"state/[^/]+", "screening/v1/device-state"), (_LANE + r"alarms", "screening/v1/alarm"),
    (_LANE + r"items/result", "screening/v1/item-result"), (_LANE + r"items/alert", "screening/v1/item-alert"),
    (_LANE + r"items/verdict", "screening/v1/item-verdict"), (_LANE + r"ead/quality", "screening/v1/ead-quality"),
    (_LANE + r"cmd/reply(/.*)?", "screening/v1/command-reply"), (_LANE + r"cmd/[^/]+", "screening/v1/command"),
]


class ContractError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def schema_for_topic(topic: str) -> str | None:
    return next((sid for pattern, sid in _TOPICS if re.fullmatch(pattern, topic)), None)


def load(name: str) -> dict[str, Any]:
    """One schema file of the package, by file name without `.schema.json`."""
    text = resources.files("station").joinpath("schemas", f"{name}.schema.json").read_text(encoding="utf-8")
    return dict(json.loads(text))


_formats = FormatChecker()


def _date_time(value: object) -> bool:
    """RFC 3339 with its zone (jsonschema checks date-time only with an optional package installed)."""
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time with a zone")
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


_formats.checks("date-time", raises=ValueError)(_date_time)


@cache
def _validator(schema_id: str) -> Draft202012Validator:
    resources_ = [(BASE + f"{name}.schema.json", Resource.from_contents(load(name)))
                  for name in [*SCHEMAS.values(), "envelope"]]
    registry: Registry[Any] = Registry().with_resources(resources_)
    return Draft202012Validator(load(SCHEMAS[schema_id]), registry=registry, format_checker=_formats)


def problems(schema_id: str, payload: object) -> list[str]:
    """Each way `payload` breaks the schema, as `$.path: what is wrong`; empty when it is valid."""
    errors = sorted(_validator(schema_id).iter_errors(payload), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}"[:300] for e in errors]


def parse(schema_id: str, payload: bytes) -> dict[str, Any]:
    """An inbound payload as a dict, or ContractError naming what is wrong with it."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ContractError([f"not UTF-8 (byte {err.start})"]) from err
    except json.JSONDecodeError as err:
        raise ContractError([f"not JSON: {err.msg} at line {err.lineno} column {err.colno}"]) from err
    if not isinstance(data, dict):
        raise ContractError([f"$: expected a JSON object, got {type(data).__name__}"])
    found = problems(schema_id, data)
    if found:
        raise ContractError(found)
    return data
