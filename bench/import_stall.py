"""Benchmark: a bulk `station ead import` into a running lane, against the same lane left alone.

The audit: importing 400,000 declarations into a running station froze its event loop for over 5 s,
the PLC watchdog stopped the belt and the daemon died with `database is locked`. Here the simulated
lane runs as the daemon does (`station run --simulate --items N --json`, its own process) twice in one
run of this benchmark: once alone (the baseline) and once while `station ead import` loads RECORDS
declarations into the same store from another process. Each run reports the event loop's longest
stall (target <= 50 ms) and the decision latency p99; the import's run also reports lost and
misrouted items against the simulator's ground truth (target 0) and how many records were stored.

    .venv/bin/python -m bench.import_stall [--records 400000] [--items 150] [--start-after 8]

Prints a table, then one JSON line (the last line of output). The machine is shared: quote medians of
several runs, and read the ratios (import / alone) rather than the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from simulator.ead_feed import make_record
from station.ead.s10 import make_s10
from station.store import Store

STALL_TARGET_MS = 50.0


def write_records(path: Path, count: int) -> None:
    """`count` valid CN 23 declarations for items the simulated lane never sees."""
    rng = np.random.default_rng(7)
    with path.open("w", encoding="utf-8") as out:
        for serial in range(count):
            out.write(json.dumps(make_record(rng, make_s10("LX", 50_000_000 + serial, "DE"))) + "\n")


def run_lane(data_dir: Path, items: int, import_file: Path | None, start_after_s: float) -> dict[str, object]:
    """One simulated-lane run; with `import_file`, `station ead import` of it starts `start_after_s` in."""
    station = [sys.executable, "-m", "station.cli"]
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir.parent / f"{data_dir.name}.log").open("w")  # the lane's log, read by nobody while it runs
    lane = subprocess.Popen([*station, "run", "--simulate", "--items", str(items), "--json", "--data-dir",
                             str(data_dir)], stdout=subprocess.PIPE, stderr=log, text=True)
    imported: dict[str, object] = {}
    if import_file is not None:
        time.sleep(start_after_s)
        started = time.monotonic()
        done = subprocess.run([*station, "ead", "import", str(import_file), "--data-dir", str(data_dir), "--json"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        imported = {"import_s": round(time.monotonic() - started, 1), "import_exit": done.returncode,
                    "import_summary": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""}
        if lane.poll() is not None:
            imported["lane_ended_before_the_import"] = True
    out, _ = lane.communicate(timeout=3600)
    log.close()
    if lane.returncode not in (0, 1) or not out.strip():
        tail = (data_dir.parent / f"{data_dir.name}.log").read_text()[-3000:]
        raise SystemExit(f"the lane run failed ({lane.returncode}):\n{tail}")
    summary = json.loads(out.strip().splitlines()[-1])
    with Store(data_dir / "station.db") as store:
        stored = int(store.db.execute("SELECT count(*) FROM ead_records WHERE source != 'simulator'").fetchone()[0])
    return {**summary, **imported, "records_stored": stored}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--items", type=int, default=150, help="items per lane run (the run must outlast the import)")
    parser.add_argument("--workdir", type=Path, help="keep the stores and the lanes' logs here (default: a temp dir)")
    parser.add_argument("--start-after", type=float, default=8.0, help="seconds into the run the import starts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        records = work / "records.jsonl"
        write_records(records, args.records)
        alone = run_lane(work / "alone", args.items, None, 0)
        loaded = run_lane(work / "import", args.items, records, args.start_after)
    rows = [("event loop longest stall (ms)", "loop_stall_ms"), ("decision latency p99 (ms)", None),
            ("items", "items"), ("lost", "lost"), ("misrouted", "misrouted"), ("unsafe", "of_which_unsafe")]
    print(f"{'':<32}{'alone':>12}{'with import':>14}")
    for label, key in rows:
        a = alone["decision_latency_ms"]["p99"] if key is None else alone[key]  # type: ignore[index]
        b = loaded["decision_latency_ms"]["p99"] if key is None else loaded[key]  # type: ignore[index]
        print(f"{label:<32}{a!s:>12}{b!s:>14}")
    print(f"import: {args.records} records in {loaded.get('import_s')} s, {loaded['records_stored']} stored "
          f"({loaded.get('import_summary')})")
    result = {
        "records": args.records, "alone": alone, "with_import": loaded,
        "stall_ratio": round(float(loaded["loop_stall_ms"]) / max(float(alone["loop_stall_ms"]), 0.1), 2),  # type: ignore[arg-type]
        "p99_ratio": round(float(loaded["decision_latency_ms"]["p99"])  # type: ignore[index]
                           / float(alone["decision_latency_ms"]["p99"]), 2),  # type: ignore[index]
        "stall_target_ms": STALL_TARGET_MS,
    }
    print(json.dumps(result))
    ok = float(loaded["loop_stall_ms"]) <= STALL_TARGET_MS and loaded["lost"] == 0 and loaded["misrouted"] == 0  # type: ignore[arg-type]
    return 0 if ok and loaded["records_stored"] == args.records else 1


if __name__ == "__main__":
    sys.exit(main())
