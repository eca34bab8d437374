"""The station's log lines (issue 17, item 3): one line per event, naming the lane, the item and its S10
id; `--log-format json` for log shippers, every line one JSON object; plain lines without a time stamp
under systemd (the journal stamps them); no WARNING in a run where nothing went wrong."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from station import logs


def run_lane(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    config = tmp_path / "station.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "var"}"\n[web]\nenabled = false\n'
                      '[simulator]\nitem_rate_per_s = 4.0\nseed = 2\n')
    done = subprocess.run([sys.executable, "-m", "station.cli", *args, "--log-level", "info", "run", "--simulate",
                           "--items", "6", "--config", str(config)], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr.splitlines()


def test_json_lines_name_the_lane_and_each_item_and_nothing_routine_is_a_warning(tmp_path: Path) -> None:
    entries = [json.loads(line) for line in run_lane(tmp_path, "--log-format", "json")]  # every line is JSON
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
    items = [e for e in entries if e["logger"] == "station.lane.runtime" and e["msg"].startswith("item ")]
    assert len(items) >= 6
    for entry in items:
        assert entry["site"] == "SITE-1" and entry["lane"] == "lane-1"
        assert re.fullmatch(r"[0-9a-f-]{36}", entry["item"]) and entry["scan"].startswith("scan-")
        if "s10" in entry:
            assert entry["s10"] in entry["msg"]
    assert any("s10" in e for e in items)
    warnings = [e["msg"] for e in entries if e["level"] in ("WARNING", "ERROR", "CRITICAL")]
    assert not warnings, warnings


def test_plain_lines_carry_the_fields_and_drop_the_time_under_systemd(tmp_path: Path) -> None:
    lines = run_lane(tmp_path, env={"JOURNAL_STREAM": "8:12345"})
    items = [line for line in lines if line.startswith("INFO station.lane.runtime: item ")]
    assert items, lines[-10:]
    assert re.search(r" \[lane=SITE-1/lane-1 item=[0-9a-f-]{36}( s10=\w+)? scan=scan-\d+\]$", items[0]), items[0]
    assert not any(re.match(r"\d{4}-\d\d-\d\d", line) for line in lines)  # the journal stamps them


def test_a_traceback_stays_in_its_line_or_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_lane", {})  # as in a process whose lane is not known yet
    record = logging.LogRecord("station.x", logging.ERROR, __file__, 1, "failed %s", ("once",), None)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    record.item = "u-1"
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["msg"] == "failed once" and entry["item"] == "u-1" and "ValueError: boom" in entry["exc"]
    plain = logs.PlainFormatter(with_time=False).format(record)
    assert plain.splitlines()[0] == "ERROR station.x: failed once [item=u-1]" and "ValueError: boom" in plain
