"""Twenty lanes, one process each, on one broker: no two share a client id, a session or a topic, and
central gets every result of every lane (0 lost), each on its own lane's topics."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from tests.central.lane_process import Central, LaneProcess
from tests.central.test_liveness import stored_results
from tests.conftest import Broker

pytestmark = pytest.mark.slow

LANES = 20


def test_twenty_lanes_share_one_broker_without_collisions_and_lose_nothing(tmp_path: Path, broker: Broker) -> None:
    lanes = [LaneProcess(tmp_path / f"lane{n}", broker, site=f"SITE-{1 + n % 2}", lane=f"lane-{n // 2 + 1}",
                         web=False, mqtt={"keepalive_s": 30},
                         simulator={"item_rate_per_s": 0.5, "seed": n}) for n in range(LANES)]
    for lane in lanes:
        lane.folder.mkdir()

    async def main() -> None:
        async with Central(broker) as central:
            for lane in lanes:
                lane.launch()
            for lane in lanes:
                lane.wait_up(timeout=120)
            for lane in lanes:  # each has said online and published results of its own
                root = f"screening/v1/{lane.site}/{lane.lane}/"
                await central.until(lambda h, r=root: h.topic == r + "status" and h.payload["state"] == "online",
                                    f"{root} online", timeout=60)
                await central.until(lambda h, r=root: h.topic == r + "items/result", f"a result of {root}",
                                    timeout=120)
            for lane in lanes:
                assert lane.stop() == 0
            for lane in lanes:
                root = f"screening/v1/{lane.site}/{lane.lane}/"
                await central.until(lambda h, r=root: h.topic == r + "status" and h.payload["state"] == "offline",
                                    f"{root} offline")
        ids = [f"station-{lane.site}-{lane.lane}" for lane in lanes]
        assert len(set(ids)) == LANES
        lost = 0
        for lane in lanes:
            root = f"screening/v1/{lane.site}/{lane.lane}/"
            mine = [h for h in central.heard if h.topic.startswith(root)]
            assert all(h.payload["site"] == lane.site and h.payload["lane"] == lane.lane for h in mine)
            assert {h.payload["session"] for h in mine} == {1}  # one connect each: no client-id takeover
            received = Counter(str(h.payload["msg_id"]) for h in mine if h.topic == root + "items/result")
            expected = stored_results(lane.data_dir)
            lost += len(expected - set(received))
            assert set(received) <= expected
        assert lost == 0
        print(f"{LANES} lanes: {len(central.heard)} messages validated, 0 lost")

    try:
        asyncio.run(main())
    finally:
        for lane in lanes:
            lane.stop()
