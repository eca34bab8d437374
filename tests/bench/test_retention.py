"""The retention benchmark, small: its pass runs under the lane, deletes every deletable old item and keeps
every protected one, and the lane loses and misroutes nothing meanwhile (speed is the bench's to judge)."""

from __future__ import annotations

import json

import pytest

from bench.retention import main as bench_main

pytestmark = pytest.mark.slow  # two runs of the simulated lane


def test_a_quick_run_prunes_the_old_items_under_the_lane_and_keeps_the_protected(
        capsys: pytest.CaptureFixture[str]) -> None:
    bench_main(["--quick"])
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    pruned = result["with_prune"]
    assert pruned["old_deletable_left"] == 0 and pruned["old_protected_kept"] == [40, 40]
    assert pruned["first_pass"].startswith("retention: 1960 scans (1960 by age), 1960 records")
    assert pruned["lost"] == pruned["misrouted"] == 0 and pruned["items"] == 45
