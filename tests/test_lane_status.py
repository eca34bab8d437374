"""The lane tells its whole state (issue 14): the status snapshot, alarms with a lifecycle, readers that
go away, maintenance, and one station per data folder. End to end over the real transports, judged by
the simulator's ground truth (tests/test_faults.py `run`)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from simulator.faults import Fault
from station.control import os_user
from station.daemon import Lane
from station.lane.core import LaneState
from station.store import Store
from tests.test_faults import run, station_command, stored, until

pytestmark = pytest.mark.slow  # the whole lane runs: daemon, simulator (and broker)


def test_an_unplugged_scanner_raises_an_alarm_at_once_pauses_the_belt_and_resumes_only_when_cleared(
        tmp_path: Path) -> None:
    seen: dict[str, dict[str, object]] = {}

    async def station(*args: str) -> dict[str, object]:
        return await station_command(tmp_path, *args)

    async def control(lane: Lane) -> None:
        assert lane.sim is not None
        await stored(lane, 3)
        unplugged_at = time.monotonic()
        await lane.sim.inject(Fault("scanner-unplug"))
        await until(lambda: lane.runtime.core.state is LaneState.PAUSED, why="lane paused")
        assert time.monotonic() - unplugged_at < 1.0, "the alarm comes at once, not after items pile up"
        await until(lambda: not lane.sim.belt.running, why="belt stopped")  # type: ignore[union-attr]
        seen["paused"] = await station("lane", "status")
        seen["early_clear"] = await station("alarm", "clear", "SCANNER_DOWN")
        seen["ack"] = await station("alarm", "ack", "SCANNER_DOWN")
        await asyncio.sleep(0.5)
        assert not lane.sim.belt.running, "the belt stays held while the scanner is unplugged"
        await lane.sim.inject(Fault("scanner-unplug", 0))
        await until(lambda: lane.runtime.devices["scanner"]().state.value == "up", why="scanner back")
        assert lane.runtime.core.state is LaneState.PAUSED, "back is not enough: the operator clears the alarm"
        seen["clear"] = await station("alarm", "clear", "SCANNER_DOWN")
        await until(lambda: lane.sim.belt.running, why="belt running again")  # type: ignore[union-attr]
        before = lane.runtime.items_stored
        await stored(lane, before + 3)

    rows = run(tmp_path, control)
    paused = seen["paused"]
    assert paused["state"] == "PAUSED" and paused["reason"] == "SCANNER_DOWN"
    devices = paused["devices"]
    assert isinstance(devices, dict) and devices["scanner"]["state"] == "down"
    assert devices["plc"]["state"] == "up" and devices["barcode"]["state"] == "up"
    assert {"plc", "scanner", "barcode", "scale", "detector", "mqtt", "ead"} == set(devices)
    assert [a["code"] for a in paused["alarms"]] == ["SCANNER_DOWN"]  # type: ignore[union-attr]
    assert seen["early_clear"]["ok"] is False and "still not usable" in str(seen["early_clear"]["error"])
    assert seen["ack"]["ok"] is True and seen["ack"]["alarms"][0]["acked_by"] == os_user()  # type: ignore[index]
    assert seen["clear"]["ok"] is True and seen["clear"]["alarms"] == []
    # Items on the belt when the cable came out were not scanned: they went to INSPECT (the audit in `run`
    # proves none reached CLEAR); the pause kept the rest from flooding the inspection bin.
    assert sum("SCAN_MISSING" in r["codes"] for r in rows.values()) <= 3
    with Store(tmp_path / "station.db") as store:
        row = store.db.execute("SELECT * FROM alarms WHERE code = 'SCANNER_DOWN'").fetchone()
        audited = [r["action"] for r in store.db.execute("SELECT action FROM audit")]
    assert row["acked_by"] == os_user() and row["cleared_by"] == os_user() and row["cleared_at"] >= row["acked_at"]
    assert audited[0].startswith("alarm clear SCANNER_DOWN refused") and audited[1:] == [
        "alarm ack SCANNER_DOWN", "alarm clear SCANNER_DOWN"]


def test_a_second_station_on_the_same_data_folder_exits_2_naming_the_first_and_leaves_it_reachable(
        tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    async def control(lane: Lane) -> None:
        await stored(lane, 1)
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "station.cli", "run", "--simulate", "--data-dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(second.communicate(), 60)
        seen["rc"], seen["err"] = second.returncode, err.decode()
        seen["status"] = await station_command(tmp_path, "lane", "status")  # the first still answers

    run(tmp_path, control)
    assert seen["rc"] == 2
    assert f"PID {os.getpid()}" in str(seen["err"]) and "Traceback" not in str(seen["err"])
    assert seen["status"]["state"] == "RUNNING"  # type: ignore[index]


async def station_cli(data_dir: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "station.cli", *args, "--data-dir", str(data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_diag_writes_that_move_goods_need_maintenance_and_every_one_is_audited(tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    async def control(lane: Lane) -> None:
        assert lane.sim is not None
        await stored(lane, 2)
        await until(lambda: len(lane.runtime.core.tracks) >= 1, why="an item on the belt")
        seen["refused"] = await station_cli(tmp_path, "diag", "plc", "write", "gate_clear", "1")
        seen["refused_speed"] = await station_cli(tmp_path, "diag", "plc", "write", "belt_speed_sp", "100")
        assert lane.runtime.core.state is LaneState.RUNNING and lane.sim.belt.running
        seen["maintenance"] = await station_command(tmp_path, "lane", "maintenance")
        # (an item whose CLEAR is already on the gate keeps it: too late to take back, as in any fault)
        seen["on_belt"] = [t.track_id for t in lane.runtime.core.tracks if not t.clear_on_gate]
        await until(lambda: not lane.sim.belt.running, why="belt stopped")  # type: ignore[union-attr]
        seen["until_mm"] = until_mm = (int(lane.runtime.core.values["encoder"]) + 100_000) % 2**32  # expiry ahead
        seen["until"] = await station_cli(tmp_path, "diag", "plc", "write", "gate_clear_until_mm", str(until_mm))
        seen["written"] = await station_cli(tmp_path, "diag", "plc", "write", "gate_clear", "1")
        await until(lambda: bool(lane.runtime.core.values.get("gate_clear")), why="gate CLEAR read back")
        await asyncio.sleep(0.3)
        assert lane.runtime.core.values.get("gate_clear"), "in maintenance the outputs are the technician's"
        seen["reset"] = await station_command(tmp_path, "lane", "reset")
        await until(lambda: not lane.runtime.core.values.get("gate_clear"), why="gate back to INSPECT")
        seen["start"] = await station_command(tmp_path, "lane", "start")
        on_belt = set(seen["on_belt"])  # type: ignore[call-overload]
        await until(lambda: on_belt <= {r[0] for r in lane.store.db.execute("SELECT track_id FROM items")},
                    why="the items on the belt in maintenance stored")
        await stored(lane, lane.runtime.items_stored + 2)

    rows = run(tmp_path, control)
    code, _, err = seen["refused"]  # type: ignore[misc]
    assert code == 1 and "moves goods" in err and "maintenance" in err
    assert seen["refused_speed"][0] == 1  # type: ignore[index]
    assert seen["maintenance"]["state"] == "MAINTENANCE"  # type: ignore[index]
    code, out, err = seen["written"]  # type: ignore[misc]
    assert code == 0 and "through the running station" in out, err
    assert seen["until"][0] == 0  # type: ignore[index]
    assert seen["reset"]["state"] == "STOPPED" and seen["start"]["state"] == "RUNNING"  # type: ignore[index]
    by_track = {r["track_id"]: r for r in rows.values()}
    for track_id in seen["on_belt"]:  # type: ignore[attr-defined]
        assert by_track[track_id]["decision"] == "INSPECT"
        assert "MAINTENANCE" in by_track[track_id]["codes"] and "UNHANDLED_REASON" not in by_track[track_id]["codes"]
    with Store(tmp_path / "station.db") as store:
        audited = [(r["who"], r["action"]) for r in store.db.execute("SELECT who, action FROM audit ORDER BY id")]
    me, until_mm = os_user(), seen["until_mm"]
    assert audited == [(me, "diag plc write gate_clear=True refused: lane RUNNING"),
                       (me, "diag plc write belt_speed_sp=100 refused: lane RUNNING"),
                       (me, "lane maintenance"), (me, f"diag plc write gate_clear_until_mm={until_mm} (lane MAINTENANCE)"),
                       (me, "diag plc write gate_clear=True (lane MAINTENANCE)"),
                       (me, "lane reset"), (me, "lane start")]


def test_sniffing_a_port_the_running_station_holds_says_so(tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    async def control(lane: Lane) -> None:
        await stored(lane, 1)
        seen["sniff"] = await station_cli(tmp_path, "diag", "serial", "sniff", lane.scanner.path, "--seconds", "1")
        sim = lane.sim
        await until(lambda: any(o.truth.threats and o.bin for o in sim.outcomes.values()), 30,
                    "a threat through the gate (the audit judges the run)")

    run(tmp_path, control)
    code, _, err = seen["sniff"]  # type: ignore[misc]
    assert code == 1 and f"held by the running station (PID {os.getpid()})" in err
    assert "Errno" not in err


def test_a_scanner_absent_at_start_holds_the_lane_until_it_is_there_and_the_alarm_cleared(tmp_path: Path) -> None:
    seen: dict[str, object] = {}

    async def control(lane: Lane) -> None:
        assert lane.sim is not None
        board = lane.runtime.board
        await until(lambda: board.current is not None and "SCANNER_DOWN" in {a.code for a in board.current.alarms},
                    why="SCANNER_DOWN raised at start")
        await asyncio.sleep(0.5)
        seen["held"] = lane.runtime.publish_status()
        assert not lane.sim.belt.running, "no belt without a scanner"
        await lane.sim.inject(Fault("scanner-unplug", 0))  # plugged in at last
        await until(lambda: lane.runtime.devices["scanner"]().state.value == "up", why="scanner up")
        seen["clear"] = lane.runtime.clear_alarm("SCANNER_DOWN", "ann")
        seen["start"] = lane.runtime.operator("start", "ann")
        await until(lambda: lane.sim.belt.running, why="belt running")  # type: ignore[union-attr]
        await until(lambda: any(o.truth.threats and o.bin for o in lane.sim.outcomes.values()), 30, "a threat routed")

    run(tmp_path, control, faults=[Fault("scanner-unplug")])
    held = seen["held"]
    assert held.state == "STOPPED" and held.reason == "SCANNER_DOWN"  # type: ignore[attr-defined]
    assert held.device("scanner").state == "down"  # type: ignore[attr-defined]
    assert seen["clear"] is None and seen["start"] == []
