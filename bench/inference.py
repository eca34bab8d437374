"""Benchmark: the station's whole per-image pipeline versus bare `session.run`, same model, same run.

The measurement lives in ``models.bench`` (the installed package has it too, as
``station model bench``); this is the benchmark entry for a source checkout. Both run on the same
synthetic scans, alternating image by image in rounds so that they share the machine's noise, at 1
and 2 threads. Budgets (DESIGN.md): inference p50 <= 25 ms; pipeline / bare <= 1.15 at the median.

    .venv/bin/python -m bench.inference [--images 20] [--rounds 15]

Prints a readable table, then one JSON line (the last line of output).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from models.bench import format_table, run_bench, synthetic_scans
from station.kernel.detector import DEFAULT_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20, help="synthetic scans to write and time")
    parser.add_argument("--rounds", type=int, default=15, help="passes over the scans")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_bench(DEFAULT_MODEL, synthetic_scans(Path(tmp), args.images), args.rounds)
    print("\n".join(format_table(report)))
    print(json.dumps({"bench": "inference", **report}))


if __name__ == "__main__":
    main()
