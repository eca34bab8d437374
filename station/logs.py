"""The station's log lines: one line per event, carrying the lane, the item and its S10 id when the event
has them, so a technician can grep one item's story and a log shipper can index it.

Two formats (`station --log-format plain|json`):

- `plain` (the default): `LEVEL logger: message [lane=SITE-1/lane-1 item=... s10=...]`, with the time in
  front on a terminal or in a file, and without it under systemd (JOURNAL_STREAM is set), since the
  journal stamps every line itself;
- `json`: one JSON object per line: `ts` (ISO 8601, UTC, milliseconds), `level`, `logger`, `msg`, the
  fields below that the event has, and `exc` (the traceback) when there is one.

Fields: `log.info("...", extra=fields(item=uid, s10=item_id, scan=scan_id))`; the site and lane are
put on every record once the daemon knows them (`set_lane`). Routine events log at INFO; WARNING means
a technician should look.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import TextIO

FIELDS = ("item", "s10", "scan", "alarm", "device")  # besides site and lane
FORMATS = ("plain", "json")

_lane: dict[str, str] = {}


def fields(**values: object) -> dict[str, object]:
    """`extra=` for a log call: the fields that have a value (FIELDS only)."""
    unknown = set(values) - set(FIELDS)
    assert not unknown, f"not a log field: {sorted(unknown)}"
    return {name: value for name, value in values.items() if value is not None}


def set_lane(site: str, lane: str) -> None:
    """From now on every line of this process names the lane."""
    _lane.update(site=site, lane=lane)


def _event_fields(record: logging.LogRecord) -> dict[str, object]:
    found: dict[str, object] = dict(_lane)
    for name in FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            found[name] = value
    return found


class PlainFormatter(logging.Formatter):
    def __init__(self, with_time: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s" if with_time
                         else "%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        found = _event_fields(record)
        if not found:
            return line
        lane = f"{found.pop('site')}/{found.pop('lane')}" if "site" in found and "lane" in found else None
        tags = ([f"lane={lane}"] if lane else []) + [f"{name}={value}" for name, value in found.items()]
        head, newline, rest = line.partition("\n")  # a traceback goes after the tags
        return f"{head} [{' '.join(tags)}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00",
                                                                                                         "Z"),
            "level": record.levelname, "logger": record.name, "msg": record.getMessage(), **_event_fields(record)}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, log_format: str = "plain", stream: TextIO | None = None) -> None:
    """The process's one handler, on stderr: `level` (debug, info, warning, error) in `log_format`."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter(with_time="JOURNAL_STREAM" not in os.environ))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
