"""The simulated PLC's program (heartbeat watchdog, E-stop latch, link drop) seen through the real driver.

Every test runs twice: over Modbus TCP and over Modbus RTU through a pty pair; same driver, same profile.
"""

from __future__ import annotations

import asyncio

import pytest

from drivers.plc import FaultCode, Plc
from drivers.profile import load_profile
from simulator.belt import CLEAR, INSPECT, Belt, BeltEvent, Departed, Routed, SimItem
from simulator.plc import SimPlc
from tests.drivers.plc_harness import run, until

PROFILE = load_profile("default")

pytestmark = pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu"])


async def start_belt(plc: Plc, speed: int = 1000) -> None:
    await plc.write("belt_speed_sp", speed)
    await plc.write("belt_run", True)
    await until(plc, lambda v: v["belt_running"] is True)


def test_stale_heartbeat_stops_the_belt_until_the_station_restarts_it(rtu: bool) -> None:
    async def body() -> None:
        belt = Belt()
        async with SimPlc(belt, rtu=rtu, heartbeat_timeout=0.8) as sim, \
                Plc(PROFILE, sim.link, heartbeat_interval=0.05) as plc:
            await plc.next_snapshot(0)
            await start_belt(plc)
            plc.heartbeat_enabled = False  # the station hangs
            # The PLC drops the run command as it raises the fault. One poll reads the coils and the
            # registers in separate requests, so a poll may see the fault before the coil: wait
            # (within until's 3 s) for a poll that sees both.
            await until(plc, lambda v: v["fault_code"] == FaultCode.HEARTBEAT_STALE and v["belt_run"] is False)
            await until(plc, lambda v: v["belt_running"] is False)
            plc.heartbeat_enabled = True  # the station recovers
            cleared = await until(plc, lambda v: v["fault_code"] == FaultCode.NONE)
            # ... but the belt stays stopped until it is told to run again
            for _ in range(5):
                snap = await plc.next_snapshot(cleared.seq)
                assert snap.values["belt_running"] is False and snap.values["belt_run"] is False
                cleared = snap
            await start_belt(plc)
            assert belt.running

    run(body)


def test_a_running_belt_with_a_live_heartbeat_keeps_running(rtu: bool) -> None:
    async def body() -> None:
        async with SimPlc(Belt(), rtu=rtu, heartbeat_timeout=0.8) as sim, \
                Plc(PROFILE, sim.link, heartbeat_interval=0.05) as plc:
            await plc.next_snapshot(0)
            await start_belt(plc)
            start = await plc.next_snapshot(0)
            await until(plc, lambda v: v["heartbeat"] >= start.values["heartbeat"] + 8)  # type: ignore[operator]
            snap = await plc.next_snapshot(0)
            assert snap.values["fault_code"] == FaultCode.NONE and snap.values["belt_running"] is True

    run(body)


def test_estop_latches_until_released_and_reset(rtu: bool) -> None:
    async def body() -> None:
        belt = Belt()
        async with SimPlc(belt, rtu=rtu) as sim, Plc(PROFILE, sim.link) as plc:
            await plc.next_snapshot(0)
            await start_belt(plc)
            sim.press_estop()
            assert belt.speed_mm_s == 0.0, "E-stop stops the belt at once"
            snap = await until(plc, lambda v: v["estop_active"] is True)
            assert snap.values["fault_code"] == FaultCode.ESTOP and snap.values["belt_run"] is False
            assert snap.values["belt_speed"] == 0
            sim.release_estop()
            snap = await until(plc, lambda v: v["estop_active"] is False)
            assert snap.values["fault_code"] == FaultCode.ESTOP, "release alone does not clear the fault"
            await plc.write("estop_reset", True)
            snap = await until(plc, lambda v: v["fault_code"] == FaultCode.NONE)
            assert snap.values["estop_reset"] is False, "the PLC clears the reset pulse itself"
            assert snap.values["belt_running"] is False
            await start_belt(plc)

    run(body)


def test_reset_while_still_pressed_is_ignored(rtu: bool) -> None:
    async def body() -> None:
        async with SimPlc(Belt(), rtu=rtu) as sim, Plc(PROFILE, sim.link) as plc:
            sim.press_estop()
            await until(plc, lambda v: v["estop_active"] is True)
            await plc.write("estop_reset", True)
            snap = await until(plc, lambda v: v["estop_reset"] is False)
            assert snap.values["fault_code"] == FaultCode.ESTOP

    run(body)


def test_items_are_routed_by_the_gate_coil_and_counted(rtu: bool) -> None:
    async def body() -> None:
        belt = Belt()
        events: list[BeltEvent] = []
        async with SimPlc(belt, rtu=rtu, on_events=events.extend) as sim, Plc(PROFILE, sim.link) as plc:
            await plc.next_snapshot(0)
            await plc.write("gate_clear_until_mm", 3000)  # placed at -400 mm, its lead reaches the gate at 2900
            await plc.write("gate_clear", True)
            assert belt.place(SimItem(1, 300.0))
            await start_belt(plc, speed=3000)
            snap = await until(plc, lambda v: v["cleared_count"] == 1, timeout=5.0)
            assert snap.values["inspected_count"] == 0
            routed = [e for e in events if isinstance(e, Routed)]
            assert [(e.item.index, e.bin) for e in routed] == [(1, CLEAR)]
            assert isinstance(events[-1], Departed)

    run(body)


def test_a_clear_expires_at_its_position_and_routes_nothing_after(rtu: bool) -> None:
    """A CLEAR meant for an item that has passed (it landed late) must not route the item behind it:
    once the encoder passes gate_clear_until_mm the PLC drops it, across the encoder's wrap too."""
    async def body() -> None:
        belt = Belt()
        events: list[BeltEvent] = []
        async with SimPlc(belt, rtu=rtu, on_events=events.extend) as sim, Plc(PROFILE, sim.link) as plc:
            sim.shift_encoder(2**32 - 1000)  # the count wraps 1000 mm of belt from now
            await plc.next_snapshot(0)
            await plc.write("gate_clear_until_mm", (2**32 - 1000 + 1500) % 2**32)  # expires after 1500 mm
            await plc.write("gate_clear", True)
            assert belt.place(SimItem(1, 300.0))  # its lead reaches the gate at 2900 mm: too late
            await start_belt(plc, speed=3000)
            snap = await until(plc, lambda v: v["inspected_count"] == 1, timeout=5.0)
            assert snap.values["cleared_count"] == 0 and snap.values["gate_clear"] is False
            assert [(e.item.index, e.bin) for e in events if isinstance(e, Routed)] == [(1, INSPECT)]
            assert sim.program.expired_clears == 1 and snap.values["encoder"] < 5000  # it did wrap

    run(body)


def test_state_survives_a_link_drop(rtu: bool) -> None:
    async def body() -> None:
        belt = Belt()
        async with SimPlc(belt, rtu=rtu, heartbeat_timeout=5.0) as sim, Plc(PROFILE, sim.link) as plc:
            await plc.next_snapshot(0)
            await plc.write("gate_clear_until_mm", 100_000)
            await plc.write("gate_clear", True)
            await start_belt(plc, speed=500)
            await sim.drop_link()
            position = belt.encoder_mm
            async with asyncio.timeout(3.0):
                while belt.encoder_mm < position + 50:  # the belt runs on without the link
                    await asyncio.sleep(0.01)
            await sim.restore_link()
            snap = await until(plc, lambda v: v["encoder"] >= position + 50, timeout=5.0)
            assert snap.values["gate_clear"] is True and snap.values["belt_speed_sp"] == 500

    run(body)


def test_a_failing_event_callback_surfaces_on_exit(rtu: bool) -> None:
    def boom(events: list[BeltEvent]) -> None:
        raise RuntimeError("orchestrator bug")

    async def body() -> None:
        item = SimItem(1, 100.0)
        try:
            async with SimPlc(Belt(), rtu=rtu, on_events=boom) as sim:
                sim.belt.place(item)
                async with Plc(PROFILE, sim.link) as plc:
                    await plc.next_snapshot(0)
                    await start_belt(plc, speed=3000)
                    async with asyncio.timeout(3.0):
                        while item.lead_mm < 250.0:  # at the barcode mark: the event was raised
                            await asyncio.sleep(0.01)
        except RuntimeError as err:
            assert "orchestrator bug" in str(err)
        else:
            raise AssertionError("the callback's crash was swallowed")

    run(body)
