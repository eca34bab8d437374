"""The broker-side check of every test: each payload a test reads off the broker goes through `validated`,
which checks it against its topic's schema in station/schemas/ and counts it, so the run's summary
(tests/conftest.py, pytest_terminal_summary) says how many were checked and that none failed."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from station.contract import problems, schema_for_topic

checked: Counter[str] = Counter()  # schema id -> distinct messages validated
topics: set[str] = set()  # the concrete topics they came on
invalid: list[str] = []  # "topic: problems" of each distinct message that broke the contract
_seen: set[tuple[str, bytes]] = set()  # a message read again (a feed polled twice) is counted once


def validated(topic: str, payload: object) -> dict[str, Any]:
    """The payload (bytes, as aiomqtt hands it, or text) as a dict, once it is valid for its topic's schema;
    AssertionError naming the topic and the problems otherwise."""
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)  # type: ignore[call-overload]
    schema = schema_for_topic(topic)
    found = [f"no schema in the contract for the topic {topic}"] if schema is None else []
    data: object = None
    try:
        data = json.loads(raw)
    except ValueError as err:
        found.append(f"$: not JSON: {err}")
    if schema is not None and not found:
        found = problems(schema, data)
    first = (topic, raw) not in _seen
    _seen.add((topic, raw))
    if found:
        if first:
            invalid.append(f"{topic}: {'; '.join(found)}")
        raise AssertionError(f"{topic} breaks {schema}: {found}\n{raw[:1000]!r}")
    assert isinstance(data, dict)  # every schema of the contract is an object
    if first:
        checked[str(schema)] += 1
        topics.add(topic)
    return data
