"""The PLC driver over Modbus RTU: the same Plc, profile and snapshots, through a real pty pair."""

from __future__ import annotations

import asyncio

import pytest

from drivers.health import HealthState
from drivers.links import RtuLink
from drivers.plc import Plc, PlcLinkError
from drivers.profile import load_profile
from simulator.belt import Belt, SimItem
from simulator.plc import SimPlc
from tests.drivers.plc_harness import condition, run, until, until_health

PROFILE = load_profile("default")


def test_rtu_snapshots_carry_the_belts_values_and_name_the_tty() -> None:
    async def body() -> None:
        belt = Belt()
        item = SimItem(1, 300.0)
        belt.place(item)
        item.lead_mm = 100.0  # the item now blocks the entry eye
        async with SimPlc(belt, rtu=True) as sim, Plc(PROFILE, sim.link, backoff=(0.05, 0.2)) as plc:
            assert isinstance(sim.link, RtuLink) and sim.link.port == sim.rtu_path
            assert plc.where == f"PLC {sim.rtu_path}@19200N81"
            snap = await until(plc, lambda v: v["entry_eye"] is True)
            assert set(snap.values) == {r.name for r in PROFILE.registers}
            assert snap.values["gate_eye"] is False and plc.health.state == HealthState.UP
            await plc.write("belt_speed_sp", 1200)
            await plc.write("belt_run", True)
            moving = await until(plc, lambda v: v["belt_speed"] == 1200 and v["encoder"] > 100)
            assert belt.speed_setpoint_mm_s == 1200 and moving.values["belt_running"] is True
            assert await plc.read("belt_speed_sp") == 1200
            await until(plc, lambda v: v["heartbeat"] >= 2)  # the heartbeat rides the same line

    run(body)


def test_rtu_plc_that_goes_silent_is_down_and_comes_back() -> None:
    async def body() -> None:
        async with SimPlc(Belt(), rtu=True) as sim, \
                Plc(PROFILE, sim.link, timeout=0.1, backoff=(0.05, 0.2)) as plc:
            await plc.next_snapshot(0)
            await sim.drop_link()  # a serial PLC that vanishes is only silence on the line
            await until_health(plc, HealthState.DEGRADED)
            assert "no reply within 0.1 s" in plc.health.detail and sim.rtu_path in plc.health.detail
            await until_health(plc, HealthState.DOWN)
            stale = plc.latest
            assert stale is not None
            await sim.restore_link()
            fresh = await asyncio.wait_for(plc.next_snapshot(stale.seq), 5.0)
            assert fresh.seq > stale.seq
            await condition(lambda: plc.health.state == HealthState.UP, what="health UP")
            await plc.write("gate_clear", True)
            await condition(lambda: sim.belt.gate_clear, what="the belt's gate set to CLEAR")

    run(body)


def test_a_missing_serial_port_is_down_naming_the_port_and_never_raises_on_enter() -> None:
    async def body() -> None:
        link = RtuLink("/dev/does-not-exist-plc", baudrate=9600, parity="E")
        async with Plc(PROFILE, link, backoff=(0.05, 0.1)) as plc:
            await until_health(plc, HealthState.DOWN)
            assert plc.health.detail == "cannot connect to PLC /dev/does-not-exist-plc@9600E81"
            await condition(lambda: plc.health.errors.get("connect", 0) >= 2, what="a second connect attempt")
            assert plc.latest is None
            with pytest.raises(PlcLinkError, match="not connected: cannot write belt_run"):
                await plc.write("belt_run", True)

    run(body)
