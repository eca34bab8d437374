"""The second shipped profile ("compact"): another layout, the same lane, unchanged driver and simulator."""

from __future__ import annotations

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.plc import Plc, PlcWriteError
from drivers.profile import load_profile
from simulator.belt import CLEAR, INSPECT, Belt, BeltEvent, Routed, SimItem
from simulator.plc import SimPlc
from tests.drivers.plc_harness import run, until

COMPACT = load_profile("compact")
DEFAULT = load_profile("default")


def test_compact_lays_out_the_same_names_differently() -> None:
    assert {r.name for r in COMPACT.registers} == {r.name for r in DEFAULT.registers}
    for reg in COMPACT.registers:
        assert reg.address != DEFAULT.by_name(reg.name).address, reg.name
    assert COMPACT.by_name("encoder").word_order == "little"
    assert COMPACT.by_name("belt_speed").table == "holding" and not COMPACT.by_name("belt_speed").writable
    assert COMPACT.unit_id != DEFAULT.unit_id
    assert len(COMPACT.groups()) > len(DEFAULT.groups()), "its gaps make the poll several requests per table"


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu"])
def test_the_lane_runs_on_the_compact_profile(rtu: bool) -> None:
    async def body() -> None:
        belt = Belt()
        events: list[BeltEvent] = []
        async with SimPlc(belt, profile=COMPACT, rtu=rtu, on_events=events.extend) as sim, \
                Plc(COMPACT, sim.link) as plc:
            first = await plc.next_snapshot(0)
            assert set(first.values) == {r.name for r in DEFAULT.registers}
            assert first.values["belt_running"] is False and first.values["fault_code"] == 0
            with pytest.raises(PlcWriteError, match="'belt_speed' is read-only"):
                await plc.write("belt_speed", 100)
            # One-shot, for the next item to reach the gate only, and only before the expiry written first.
            await plc.write("gate_clear_until_mm", int(first.values["encoder"]) + 10_000)
            await plc.write("gate_clear", True)
            first_item, second_item = SimItem(1, 300.0), SimItem(2, 200.0)
            assert belt.place(first_item)
            first_item.lead_mm = 2000.0  # already past the tunnel: keeps the test short
            assert belt.place(second_item)
            await plc.write("belt_speed_sp", 3000)
            await plc.write("belt_run", True)
            await until(plc, lambda v: v["belt_speed"] == 3000 and v["belt_running"] is True)
            snap = await until(plc, lambda v: v["cleared_count"] == 1, timeout=5.0)
            assert snap.values["gate_position_clear"] is True and snap.values["gate_clear"] is False
            done = await until(plc, lambda v: v["inspected_count"] == 1, timeout=5.0)
            assert done.values["cleared_count"] == 1 and done.values["gate_position_clear"] is False
            assert [(e.item.index, e.bin) for e in events if isinstance(e, Routed)] == [(1, CLEAR), (2, INSPECT)]
            assert abs(float(done.values["encoder"]) - belt.encoder_mm) < 500  # within a few polls of the belt

    run(body)


def test_the_compact_encoder_is_stored_low_word_first() -> None:
    async def body() -> None:
        belt = Belt()
        async with SimPlc(belt, profile=COMPACT) as sim, Plc(COMPACT, sim.link) as plc:
            await plc.next_snapshot(0)
            await plc.write("belt_speed_sp", 3000)
            await plc.write("belt_run", True)
            await until(plc, lambda v: v["encoder"] > 100)
            await plc.write("belt_run", False)
            stopped = await until(plc, lambda v: v["belt_running"] is False)
            encoder = await plc.read("encoder")
            assert encoder == stopped.values["encoder"] and isinstance(encoder, int)
            bare = AsyncModbusTcpClient(sim.host, port=sim.port, retries=0, reconnect_delay=0)
            try:
                assert await bare.connect()
                rsp = await bare.read_input_registers(300, count=2, device_id=COMPACT.unit_id)
                assert rsp.registers == [encoder & 0xFFFF, encoder >> 16]
            finally:
                bare.close()

    run(body)
