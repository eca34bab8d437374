"""Benchmark: a big retention pass under a running lane, against the same lane with nothing to delete.

The store is given `--old` items routed 400 days ago (past both `keep_images_days` and `keep_items_days`),
each with its scan file (`--scan-kb`) under images/ and a detection: 98 % CLEAR with nothing left in the
outbox (deletable), 2 % INSPECT with no verdict (protected: they must all survive). Then the simulated lane
runs as the daemon does (`station run --simulate --items N --json`, its own process) twice: on an empty
data folder (the baseline) and on the loaded one, where the daemon's retention thread runs its first pass
30 s after the start (station/space.py FIRST_PASS_S), while the lane decides items. Each run reports the
decision latency p50 / p99 (scan ready to decision, the budget of DESIGN.md: <= 150 ms p99) and the event
loop's longest stall; the loaded run
also what the pass did (the daemon's INFO line: scans, records, seconds, store jobs, the longest job),
how many of the run's items were decided while it ran (it must overlap them to mean anything), and that
the protected items are all there, with their scans, and nothing deletable is left.

    .venv/bin/python -m bench.retention [--old 50000] [--items 100] [--scan-kb 8] [--quick]

Prints a table, then one JSON line (the last line of output). The machine is shared: quote medians of
several runs, and read the ratios (with prune / alone) rather than the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from station.store import Store

P99_BUDGET_MS = 150.0
PASS_SECONDS = re.compile(r"^retention: .* in ([\d.]+) s ")


def fill(data_dir: Path, old: int, scan_kb: int) -> int:
    """`old` items routed 400 days ago, with their scans; returns how many are protected (INSPECT, unjudged)."""
    routed_at = time.time() - 400 * 86_400
    folder = data_dir / "images" / datetime.fromtimestamp(routed_at, UTC).strftime("%Y-%m-%d")
    folder.mkdir(parents=True)
    payload = os.urandom(scan_kb * 1024)
    rows, protected = [], 0
    for n in range(old):
        uid = str(uuid.uuid4())
        scan = folder / f"OLD{n:06d}-{uid[:12]}.xde"
        scan.write_bytes(payload)
        flagged = n % 50 == 0
        protected += flagged
        decision = "INSPECT" if flagged else "CLEAR"
        rows.append((uid, n, f"ZZ{n:08d}0DE", f"ZZ{n:08d}0DE", f"OLD{n:06d}", str(scan), "0" * 64, decision, decision,
                     0.1, "[]", "found", 1, None, "bench", 20.0, routed_at + n * 0.01))
    with Store(data_dir / "station.db") as store, store.transaction() as db:
        db.executemany("INSERT INTO items (uid, track_id, item_id, barcode, scan_id, image_path, image_sha256,"
                       " decision, routed, score, reasons, ead_status, ead_version, model_hash, rules_version,"
                       " decision_latency_ms, routed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        db.execute("INSERT INTO detections (item, label, score, threat, x1, y1, x2, y2)"
                   " SELECT id, 'cable', 0.4, 0, 1, 2, 3, 4 FROM items")
    return protected


def run_lane(data_dir: Path, items: int) -> dict[str, object]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}.log"
    started = time.time()
    with log_path.open("w") as log:
        done = subprocess.run([sys.executable, "-m", "station.cli", "--log-level", "info", "--log-format", "json",
                               "run", "--simulate",
                               "--items", str(items), "--json", "--data-dir", str(data_dir)],
                              stdout=subprocess.PIPE, stderr=log, text=True, timeout=3600)
    said = log_path.read_text()
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise SystemExit(f"the lane run failed ({done.returncode}):\n{said[-3000:]}")
    summary: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    passes = [e for e in map(_json, said.splitlines()) if e.get("logger") == "station.space"
              and PASS_SECONDS.match(str(e.get("msg")))]
    first = passes[0] if passes else None
    with Store(data_dir / "station.db") as store:
        routed = [r[0] for r in store.db.execute("SELECT routed_at FROM items WHERE routed_at >= ? ORDER BY routed_at",
                                                 (started,))]
        left = store.db.execute("SELECT count(*), count(image_path) FROM items WHERE rules_version = 'bench'"
                                " AND decision = 'CLEAR'").fetchone()
        kept = store.db.execute("SELECT count(*), count(image_path) FROM items WHERE rules_version = 'bench'"
                                " AND decision = 'INSPECT'").fetchone()
    result: dict[str, object] = {**summary, "first_pass": first["msg"] if first else None}
    if first:
        ended = datetime.fromisoformat(str(first["ts"]).replace("Z", "+00:00")).timestamp()
        seconds = PASS_SECONDS.match(str(first["msg"]))
        assert seconds is not None
        began = ended - float(seconds[1])
        result["pass_s"] = float(seconds[1])
        result["items_decided_during_pass"] = sum(1 for t in routed if began <= t <= ended)
    result["old_deletable_left"] = int(left[0])
    result["old_protected_kept"] = [int(kept[0]), int(kept[1])]  # rows, with their scan
    return result


def _json(line: str) -> dict[str, object]:
    try:
        entry = json.loads(line)
    except ValueError:
        return {}
    return entry if isinstance(entry, dict) else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=int, default=50_000, help="old items to prune")
    parser.add_argument("--items", type=int, default=100, help="items per lane run (the run must outlast the pass)")
    parser.add_argument("--scan-kb", type=int, default=8, help="size of each old scan file")
    parser.add_argument("--workdir", type=Path, help="keep the stores and the lanes' logs here (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="2,000 old items, 12 lane items: a check, not a figure")
    args = parser.parse_args(argv)
    if args.quick:
        args.old, args.items = 2000, 45
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        alone = run_lane(work / "alone", args.items)
        protected = fill(work / "prune", args.old, args.scan_kb)
        loaded = run_lane(work / "prune", args.items)
    rows = [("decision latency p50 (ms)", "p50"), ("decision latency p99 (ms)", "p99"),
            ("event loop longest stall (ms)", "loop_stall_ms"), ("items", "items"), ("lost", "lost"),
            ("misrouted", "misrouted")]
    print(f"{'':<32}{'alone':>12}{'with prune':>14}")
    for label, key in rows:
        a, b = (r["decision_latency_ms"][key] if key in ("p50", "p99") else r[key]  # type: ignore[index]
                for r in (alone, loaded))
        print(f"{label:<32}{a!s:>12}{b!s:>14}")
    print(f"pass: {loaded.get('first_pass')}")
    print(f"items decided while it ran: {loaded.get('items_decided_during_pass')}; old deletable left: "
          f"{loaded['old_deletable_left']}; protected kept (rows, scans): {loaded['old_protected_kept']} "
          f"of {protected}")
    p99 = float(loaded["decision_latency_ms"]["p99"] or "inf")  # type: ignore[index]
    result = {"old": args.old, "protected": protected, "alone": alone, "with_prune": loaded,
              "p99_ratio": round(p99 / float(alone["decision_latency_ms"]["p99"] or "nan"), 2),  # type: ignore[index]
              "p99_budget_ms": P99_BUDGET_MS}
    print(json.dumps(result))
    ok = (p99 <= P99_BUDGET_MS and loaded["lost"] == loaded["misrouted"] == 0 and loaded["old_deletable_left"] == 0
          and loaded["old_protected_kept"] == [protected, protected])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
