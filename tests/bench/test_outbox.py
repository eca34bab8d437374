"""The outbox benchmark, small: its payloads are the contract's, and a quick run loses nothing on either side."""

from __future__ import annotations

import json

import pytest

from bench.outbox import TOPICS, outbox_rows
from bench.outbox import main as bench_main
from station.mqtt_link import stamp
from tests.conftest import MOSQUITTO
from tests.contract_check import validated


def test_the_payloads_it_drains_are_what_the_station_publishes() -> None:
    rows = outbox_rows(60)
    assert {r.topic for r in rows} == {TOPICS.result, TOPICS.alert}
    for seq, row in enumerate(rows, 1):
        body = validated(row.topic, stamp(row.payload, 1, seq, True))
        assert body["msg_id"] == row.msg_id
    results = [len(r.payload) for r in rows if r.topic == TOPICS.result]
    assert 700 <= sum(results) / len(results) <= 1500  # about 1 KB, as the recorder writes them


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")
def test_a_quick_run_delivers_every_message_in_order_on_both_sides_and_prints_the_figures(
        capsys: pytest.CaptureFixture[str]) -> None:
    bench_main(["--quick"])  # its exit status says whether the targets were met: speed is the bench's to judge
    lines = capsys.readouterr().out.splitlines()
    result = json.loads(lines[-1])
    assert result["messages"] == 1000 and result["rounds"] == 1 and result["complete"]
    (only,) = result["per_round"]
    for side in ("station", "bare"):
        got = only[side]["got"]
        assert got["distinct"] == 1000 and got["missing"] == 0 and got["in_order"], (side, got)
        assert only[side]["msgs_per_s"] > 0
    # the same window, read off the link's paho client (None: the bench can no longer read it, and says so)
    assert only["bare"]["inflight"] == only["station"]["inflight"], "the link's in-flight window is unreadable"
    assert only["station"]["got"]["historical"] == 1000  # all of it was queued before the link connected
    assert only["station"]["acked_s"] <= only["station"]["seconds"]
    median = result["median"]
    assert median["ratio"] == pytest.approx(median["station_msgs_per_s"] / median["bare_msgs_per_s"], rel=1e-2)
    table = "\n".join(lines[:-1])
    for figure in ("station msg/s", "bare msg/s", "ratio station/bare >= 0.8:", "station drain <= 10 s:",
                   "every message received in order: PASS",
                   f"in-flight window: station link {result['inflight']['station']} "):
        assert figure in table
