"""The PLC driver against the simulated PLC over real TCP on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from drivers.health import HealthState
from drivers.links import TcpLink
from drivers.plc import Plc, PlcLinkError, PlcWriteError
from drivers.profile import load_profile
from simulator.belt import Belt, SimItem
from simulator.plc import SimPlc
from tests.drivers.plc_harness import free_port, run, until, until_health

PROFILE = load_profile("default")


def client(port: int, **kw: object) -> Plc:
    kw.setdefault("backoff", (0.05, 0.2))
    return Plc(PROFILE, TcpLink("127.0.0.1", port), **kw)  # type: ignore[arg-type]


def test_snapshots_arrive_at_poll_rate_with_the_belts_values() -> None:
    async def body() -> None:
        belt = Belt()
        item = SimItem(1, 300.0)
        belt.place(item)
        item.lead_mm = 100.0  # the item now blocks the entry eye
        async with SimPlc(belt) as sim, client(sim.port) as plc:
            first = await asyncio.wait_for(plc.next_snapshot(0), 3.0)
            assert first.values["entry_eye"] is True and first.values["gate_eye"] is False
            assert set(first.values) == {r.name for r in PROFILE.registers}
            assert plc.health.state == HealthState.UP
            await asyncio.sleep(0.5)
            last = plc.latest
            assert last is not None and last.t > first.t
            # 25 polls are due in 0.5 s at 20 ms; a shared CI box may lag, so ask for 40 %
            assert last.seq - first.seq >= 10, f"only {last.seq - first.seq} polls in 0.5 s"

    run(body)


def test_belt_run_and_speed_move_the_encoder() -> None:
    async def body() -> None:
        async with SimPlc(Belt()) as sim, client(sim.port) as plc:
            await plc.next_snapshot(0)
            await plc.write("belt_speed_sp", 1500)
            await plc.write("belt_run", True)
            snap = await until(plc, lambda v: v["belt_speed"] == 1500 and v["encoder"] > 200)
            assert snap.values["belt_running"] is True and snap.values["belt_run"] is True
            later = await until(plc, lambda v: v["encoder"] > snap.values["encoder"])  # type: ignore[operator]
            assert later.seq > snap.seq
            assert await plc.read("belt_speed_sp") == 1500
            await plc.write("belt_run", False)
            await until(plc, lambda v: v["belt_running"] is False and v["belt_speed"] == 0)

    run(body)


def test_writes_outside_limits_or_to_read_only_registers_are_refused() -> None:
    async def body() -> None:
        async with SimPlc(Belt()) as sim, client(sim.port) as plc:
            await plc.next_snapshot(0)
            await plc.write("belt_speed_sp", 800)
            with pytest.raises(PlcWriteError, match=r"belt_speed_sp=3001 is above its max 3000 mm/s"):
                await plc.write("belt_speed_sp", 3001)
            with pytest.raises(PlcWriteError, match=r"belt_speed_sp=-5 is below its min 0"):
                await plc.write("belt_speed_sp", -5)
            with pytest.raises(PlcWriteError, match=r"'encoder' is read-only"):
                await plc.write("encoder", 0)
            with pytest.raises(PlcWriteError, match=r"no register 'conveyor'"):
                await plc.write("conveyor", 1)
            assert await plc.read("belt_speed_sp") == 800, "a refused write must not reach the PLC"

    run(body)


def test_heartbeat_counts_up_while_connected() -> None:
    async def body() -> None:
        async with SimPlc(Belt()) as sim, client(sim.port, heartbeat_interval=0.05) as plc:
            snap = await until(plc, lambda v: v["heartbeat"] != 0)
            await until(plc, lambda v: v["heartbeat"] > snap.values["heartbeat"])  # type: ignore[operator]

    run(body)


def test_link_drop_marks_down_and_the_client_reconnects() -> None:
    async def body() -> None:
        async with SimPlc(Belt()) as sim, client(sim.port) as plc:
            await plc.next_snapshot(0)
            await sim.drop_link()
            await until_health(plc, HealthState.DOWN)
            assert plc.health.errors, "the outage is counted"
            with pytest.raises(PlcLinkError, match="not connected"):
                await plc.write("gate_clear", True)
            stale = plc.latest
            assert stale is not None
            await sim.restore_link()
            fresh = await asyncio.wait_for(plc.next_snapshot(stale.seq), 5.0)
            assert fresh.seq > stale.seq and plc.health.state == HealthState.UP
            await plc.write("gate_clear", True)  # writes work again too

    run(body)


def test_client_started_before_the_plc_connects_when_it_appears() -> None:
    async def body() -> None:
        port = free_port()
        async with client(port) as plc:  # entering never fails because the PLC is absent
            await until_health(plc, HealthState.DOWN)
            assert plc.latest is None
            async with SimPlc(Belt(), port=port) as sim:
                assert sim.port == port
                snap = await asyncio.wait_for(plc.next_snapshot(0), 5.0)
                assert snap.seq == 1 and plc.health.state == HealthState.UP

    run(body)


def test_closed_simulator_frees_its_port() -> None:
    async def body() -> None:
        async with SimPlc(Belt()) as sim:
            port = sim.port
        with pytest.raises(OSError):
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()

    run(body)


def test_a_plc_that_stops_answering_is_degraded_then_down() -> None:
    async def body() -> None:
        connections: list[asyncio.StreamWriter] = []

        async def mute(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            connections.append(w)  # accept, read nothing, answer nothing

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with client(port, timeout=0.1) as plc:
                await until_health(plc, HealthState.DEGRADED)
                assert "no reply within 0.1 s" in plc.health.detail
                await until_health(plc, HealthState.DOWN)
                assert plc.latest is None
                assert len(connections) >= 1
        finally:
            server.close()
            for w in connections:
                w.close()
            await server.wait_closed()

    run(body)


def test_a_register_the_plc_does_not_map_is_reported_by_name(tmp_path: Path) -> None:
    text = PROFILE.path.read_text(encoding="utf-8")  # type: ignore[union-attr]
    extra = '\n[[register]]\nname = "scale_weight"\ntable = "input"\naddress = 50\ntype = "u16"\n'
    (tmp_path / "site.toml").write_text(text + extra, encoding="utf-8")
    site = load_profile(tmp_path / "site.toml")

    async def body() -> None:
        async with SimPlc(Belt()) as sim, Plc(site, sim.link, backoff=(0.05, 0.2)) as plc:
            await until_health(plc, HealthState.DOWN)
            assert "exception reply" in plc.health.detail and "input 50+1" in plc.health.detail
            assert plc.latest is None, "a partial poll is never published"

    run(body)
