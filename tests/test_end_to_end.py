"""The whole lane, end to end, over real transports: `station run --simulate` as a user runs it.

The simulator's PLC is a Modbus TCP server, its scanner and barcode reader sit on pseudo-terminals,
images are files in a spool folder, and results go to a real Mosquitto broker started by the test.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from simulator.stream import ItemStream
from station.config import load_config
from tests.conftest import Broker
from tests.contract_check import validated

pytestmark = pytest.mark.slow  # the whole lane runs: daemon, simulator (and broker)

ITEMS = 100
# Data-quality findings the default rules score rather than inspect: alone, they may go with a CLEAR.
SCORED_ONLY = {"EAD_INCOMPLETE", "VAGUE_DESCRIPTION", "HS_CODE_MISSING", "HS_CODE_INVALID", "VALUE_IMPLAUSIBLE",
               "TOTALS_INCONSISTENT", "CATEGORY_INCONSISTENT"}


def write_config(tmp_path: Path, broker: Broker | None) -> Path:
    config = tmp_path / "station.toml"
    mqtt = f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n' if broker else ""
    config.write_text(
        '[station]\nsite = "TEST"\nlane = "L1"\n'
        "[lane]\nbelt_speed_mm_s = 1500\n"
        '[storage]\ndata_dir = "var"\n'
        "[simulator]\nseed = 7\nitem_rate_per_s = 3.0\nthreat_share = 0.25\nnoread_share = 0.04\n"
        "invalid_s10_share = 0.04\nead_missing_share = 0.06\nunreadable_image_share = 0.05\n"
        "ead_late_share = 0.0\n" + mqtt  # late declarations: tests/test_ead_lane.py
    )
    return config


async def subscribe_persistently(broker: Broker) -> None:
    """Central registers its QoS 1 session first, so nothing the station publishes can be missed."""
    async with aiomqtt.Client(broker.host, broker.port, identifier="central", clean_session=False) as client:
        await client.subscribe("screening/v1/TEST/L1/items/#", qos=1)


async def receive(broker: Broker, results: int, alerts: int) -> dict[str, list[dict[str, object]]]:
    got: dict[str, list[dict[str, object]]] = {"result": [], "alert": []}
    async with aiomqtt.Client(broker.host, broker.port, identifier="central", clean_session=False) as client:
        await client.subscribe("screening/v1/TEST/L1/items/#", qos=1)
        async with asyncio.timeout(30):
            async for message in client.messages:
                got[str(message.topic).rsplit("/", 1)[1]].append(validated(str(message.topic), message.payload))
                if len(got["result"]) >= results and len(got["alert"]) >= alerts:
                    break
    return got


@pytest.fixture(scope="module")
def lane_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], Path, Path, object]:
    """One simulated run of ITEMS items with a broker, shared by the assertions below."""
    from tests.conftest import MOSQUITTO, broker_config, free_port

    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    tmp_path = tmp_path_factory.mktemp("lane")
    port = free_port()
    broker_conf = tmp_path / "mosquitto.conf"
    broker_conf.write_text(broker_config(port, tmp_path))
    broker = Broker("127.0.0.1", port, None, broker_conf)
    broker.start()
    try:
        asyncio.run(subscribe_persistently(broker))
        config = write_config(tmp_path, broker)
        done = subprocess.run(
            [sys.executable, "-m", "station.cli", "run", "--simulate", "--items", str(ITEMS), "--json",
             "--config", str(config)],
            capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        inspected = int(summary["inspected"])  # type: ignore[call-overload]
        messages = asyncio.run(receive(broker, ITEMS, inspected))
    finally:
        broker.stop()
    return summary, tmp_path / "var" / "station.db", config, messages


def rows(db: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM items ORDER BY id").fetchall()


def test_every_item_is_routed_once_and_none_lost_or_misrouted(lane_run: tuple) -> None:
    summary, db, _, _ = lane_run
    assert summary["items"] == ITEMS
    assert summary["lost"] == 0 and summary["misrouted"] == 0
    assert summary["cleared"] + summary["inspected"] == ITEMS
    assert len(rows(db)) == ITEMS
    assert summary["decision_latency_ms"]["p99"] is not None


def test_threats_are_inspected_or_counted_as_model_misses(lane_run: tuple) -> None:
    summary, _, _, _ = lane_run
    assert summary["threats"] > 0
    assert summary["threats_caught"] + summary["threats_missed"] == summary["threats"]
    assert summary["threats_caught"] >= 0.8 * summary["threats"], summary


def test_every_inspect_has_reasons_and_bad_inputs_give_the_right_ones(lane_run: tuple) -> None:
    _, db, config, _ = lane_run
    stream = ItemStream(load_config(config).simulator)
    truth = {t.scan_id: t for t in (stream.item(i) for i in range(ITEMS))}
    seen = {"IMAGE_ERROR": 0, "NO_READ": 0, "S10_INVALID": 0, "EAD_MISSING": 0}
    for row in rows(db):
        reasons = {r["code"] for r in json.loads(row["reasons"])}
        assert reasons if row["decision"] == "INSPECT" else reasons <= SCORED_ONLY, dict(row)
        t = truth[row["scan_id"]]
        expected = {
            "IMAGE_ERROR": t.image_fault,
            "NO_READ": t.barcode is None,
            "S10_INVALID": t.barcode is not None and not t.s10_valid,
            "EAD_MISSING": t.s10_valid and not t.has_ead,
        }
        for code, wanted in expected.items():
            assert (code in reasons) == wanted, (code, dict(row), t)
            seen[code] += wanted
        if t.image_fault:
            assert row["decision"] == "INSPECT"
    assert all(seen.values()), f"the run should exercise every bad input: {seen}"


def test_results_and_alerts_reach_the_broker(lane_run: tuple) -> None:
    summary, db, _, messages = lane_run
    results, alerts = messages["result"], messages["alert"]
    assert len({m["uid"] for m in results}) == ITEMS
    assert len({m["uid"] for m in alerts}) == summary["inspected"]
    assert all(m["decision"] == "INSPECT" and m["reasons"] for m in alerts)
    assert all(m["msg_id"] == f"{m['uid']}/alert" for m in alerts)
    assert all(m["msg_id"] == f"{m['uid']}/result" for m in results)
    stored = {r["uid"]: r["decision"] for r in rows(db)}
    assert {m["uid"]: m["decision"] for m in results} == stored
    sample = results[0]
    for key in ("msg_id", "site", "lane", "item_id", "scan_id", "decision", "routed", "reasons", "detections",
                "ead", "model_hash", "rules_version"):
        assert key in sample
    assert sample["site"] == "TEST" and sample["lane"] == "L1"


def test_the_checkweigher_weight_reaches_the_right_item(lane_run: tuple) -> None:
    """The scale latches a weight per item; the station binds it by belt position to that item."""
    _, _, config, messages = lane_run
    stream = ItemStream(load_config(config).simulator)
    truth = {t.scan_id: t for t in (stream.item(i) for i in range(ITEMS))}
    weighed = [m for m in messages["result"] if m["weight_kg"] is not None]
    assert len(weighed) == ITEMS, "every item on a lane with a scale is weighed"
    for m in weighed:
        assert abs(m["weight_kg"] - truth[m["scan_id"]].weight_kg) <= 0.0005, m


def test_the_lane_runs_unchanged_on_another_register_map(tmp_path: Path) -> None:
    """drivers/profiles/compact.toml: other addresses, another unit id, low-word-first counters."""
    config = tmp_path / "station.toml"
    config.write_text('[plc]\nprofile = "compact"\n[lane]\nbelt_speed_mm_s = 1500\n[storage]\ndata_dir = "var"\n'
                      "[simulator]\nseed = 11\nitem_rate_per_s = 3.0\n")
    done = subprocess.run([sys.executable, "-m", "station.cli", "run", "--simulate", "--items", "20", "--json",
                           "--config", str(config)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["items"] == 20 and summary["lost"] == 0 and summary["misrouted"] == 0
