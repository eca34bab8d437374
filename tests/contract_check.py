"""Every payload a test reads off the broker goes through `validated`: checked against its schema in
station/schemas/, and counted, so that the run's summary says how many were checked and that none failed."""

from __future__ import annotations

import json
from collections import Counter

from station.contract import problems, schema_for_topic

checked: Counter[str] = Counter()  # schema id -> messages validated
invalid: list[str] = []


def validated(topic: str, payload: bytes) -> dict[str, object]:
    """The payload as a dict, once it is valid for its topic's schema; AssertionError naming the problems."""
    data = json.loads(payload)
    schema = schema_for_topic(topic)
    assert schema is not None, f"{topic}: no schema in the contract for this topic"
    found = problems(schema, data)
    if found:
        invalid.append(f"{topic}: {found}")
        raise AssertionError(f"{topic} breaks {schema}: {found}\n{json.dumps(data)[:1000]}")
    checked[schema] += 1
    return dict(data)
