"""`station ead import` of a large file with bad lines, run as a user runs it: no line stops the import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from station.ead.s10 import make_s10
from station.store import Store
from tests.station.ead.test_ead_bounds import AUDIT_MESSAGE
from tests.station.ead.test_ead_record import record_dict

ROOT = Path(__file__).resolve().parents[3]


def test_every_good_line_is_stored_and_every_bad_one_reported_with_its_reason(tmp_path: Path) -> None:
    ids = [make_s10("RR", serial, "GB") for serial in range(1, 921)]
    lines = [json.dumps(record_dict(item_id=item_id)) for item_id in ids]
    surrogate = record_dict(item_id="CP000000015FR")
    surrogate["contents"][0]["description"] = "cotto\ud800n"
    bad = {  # line number: the field its reason names (a record refused by the store is invalid too)
        10: ("version", AUDIT_MESSAGE),
        500: ("contents[0].description", json.dumps(surrogate)),
        501: ("version", json.dumps(record_dict(item_id=ids[0], version=5000))),  # a jump from 1
        900: ("version", json.dumps(record_dict(item_id="CP000000029FR", version=2000))),  # a first record
    }
    for number, (_, line) in sorted(bad.items()):
        lines.insert(number - 1, line)
    path = tmp_path / "ead.jsonl"
    path.write_text("\n".join(lines) + "\n")

    done = subprocess.run([sys.executable, "-m", "station.cli", "ead", "import", str(path), "--data-dir",
                           str(tmp_path / "var"), "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 924 and f"924 lines, {len(bad)} invalid" in done.stderr
    assert {r["line"]: r["reasons"][0]["field"] for r in rows if not r["valid"]} == {n: f for n, (f, _) in bad.items()}
    assert all(r["stored"] is True for r in rows if r["valid"])
    jump = next(r for r in rows if r["line"] == 501)["reasons"]
    assert jump == [{"code": "EAD_INVALID", "field": "version",
                     "message": "jumps from 1 to 5000: more than 1000 above the stored version"}]
    with Store(tmp_path / "var" / "station.db") as store:
        assert all(store.ead_for(item_id) is not None for item_id in ids)
        assert store.ead_for(ids[0]).version == 1  # type: ignore[union-attr]
        assert store.ead_for("CP000000015FR") is None and store.ead_for("CP000000029FR") is None
