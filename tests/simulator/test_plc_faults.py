"""The simulated PLC's link faults (silent, exception replies, slow replies) seen through the real driver.

Each test runs over Modbus TCP and over Modbus RTU through a pty pair. The driver runs with short
timeouts and backoff so that a run of three timeouts takes well under a second.
"""

from __future__ import annotations

import asyncio

import pytest

from drivers.health import HealthState
from drivers.plc import MAX_TIMEOUTS_BEFORE_DOWN, FaultCode, Plc
from drivers.profile import load_profile
from simulator.belt import Belt
from simulator.faults import Fault, FaultError
from simulator.plc import LinkFaults, SimPlc
from tests.drivers.plc_harness import condition, run, until, until_health

PROFILE = load_profile("default")
TIMEOUT = 0.1  # the driver's per-request timeout in these tests


def driver(sim: SimPlc) -> Plc:
    return Plc(PROFILE, sim.link, timeout=TIMEOUT, heartbeat_interval=0.05, backoff=(0.05, 0.2))


async def start_belt(plc: Plc) -> None:
    await plc.write("belt_speed_sp", 1000)
    await plc.write("belt_run", True)
    await until(plc, lambda v: v["belt_running"] is True)


async def health_states_until(plc: Plc, last: HealthState, timeout: float = 5.0) -> list[HealthState]:
    """The driver's health states, in order, until it reaches `last`."""
    seen = [plc.health.state]
    async with asyncio.timeout(timeout):
        while seen[-1] is not last:
            await asyncio.sleep(0.002)
            if plc.health.state is not seen[-1]:
                seen.append(plc.health.state)
    return seen


async def recovers(plc: Plc) -> None:
    """Snapshots polled after the fault was cleared come in again, with health UP and the watchdog fault
    cleared by the heartbeat (replies already on their way when it was cleared may still knock it down once)."""
    seq = plc.latest.seq if plc.latest is not None else 0
    async with asyncio.timeout(5.0):
        while True:
            snap = await plc.next_snapshot(seq)
            if snap.values["fault_code"] == FaultCode.NONE and plc.health.state is HealthState.UP:
                return
            seq = snap.seq


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu"])
def test_a_silent_plc_times_the_driver_out_and_its_watchdog_stops_the_belt(rtu: bool) -> None:
    async def body() -> None:
        belt = Belt()
        async with SimPlc(belt, rtu=rtu, heartbeat_timeout=0.3) as sim, driver(sim) as plc:
            await plc.next_snapshot(0)
            await start_belt(plc)
            beat = sim.value("heartbeat")
            sim.set_silent(True)
            states = await health_states_until(plc, HealthState.DOWN)
            assert states[-2:] == [HealthState.DEGRADED, HealthState.DOWN], states
            assert plc.health.errors["timeout"] >= MAX_TIMEOUTS_BEFORE_DOWN
            assert f"no reply within {TIMEOUT:g} s" in plc.health.detail
            await condition(lambda: not belt.running, what="the watchdog stopping the belt")
            assert sim.value("fault_code") == FaultCode.HEARTBEAT_STALE
            assert sim.value("heartbeat") == beat, "heartbeat writes must be dropped, not applied"
            assert sim.link_up, "silence is not a closed port"
            sim.set_silent(False)
            await recovers(plc)
            assert not belt.running, "the belt waits for the station to start it again"

    run(body)


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu"])
def test_exception_replies_bring_the_driver_down_naming_the_code_and_it_keeps_retrying(rtu: bool) -> None:
    async def body() -> None:
        belt = Belt()
        async with SimPlc(belt, rtu=rtu, heartbeat_timeout=0.3) as sim, driver(sim) as plc:
            await plc.next_snapshot(0)
            await start_belt(plc)
            sim.set_exception(4)
            await until_health(plc, HealthState.DOWN)
            assert "exception reply code 4" in plc.health.detail
            refused = sum(plc.health.errors.values())
            await condition(lambda: sum(plc.health.errors.values()) >= refused + 2, what="two more reconnects")
            assert plc.health.state is HealthState.DOWN and "code 4" in plc.health.detail
            await condition(lambda: not belt.running, what="the watchdog stopping the belt")
            assert sim.value("fault_code") == FaultCode.HEARTBEAT_STALE, "refused heartbeats are not applied"
            sim.set_exception(0)
            await recovers(plc)

    run(body)


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu"])
def test_replies_slower_than_usual_but_within_the_timeout_keep_the_link_up(rtu: bool) -> None:
    delay = 0.03

    async def body() -> None:
        belt = Belt()
        async with SimPlc(belt, rtu=rtu, heartbeat_timeout=0.3) as sim, \
                Plc(PROFILE, sim.link, heartbeat_interval=0.05) as plc:
            await plc.next_snapshot(0)
            await start_belt(plc)
            sim.set_delay(delay)
            first = await plc.next_snapshot((await plc.next_snapshot(0)).seq)  # one polled wholly under delay
            last = first
            for _ in range(4):
                last = await plc.next_snapshot(last.seq)
                assert plc.health.state is HealthState.UP
            # a poll is one request per table (4 here), each answered `delay` late
            assert (last.t - first.t) / (last.seq - first.seq) >= 4 * delay
            assert last.values["encoder"] > first.values["encoder"]  # type: ignore[operator]
            assert belt.running and last.values["fault_code"] == FaultCode.NONE, "heartbeats still land"
            assert not plc.health.errors
            sim.set_delay(0)
            await recovers(plc)
            assert belt.running

    run(body)


@pytest.mark.parametrize("rtu", [False, True], ids=["tcp", "rtu"])
def test_replies_later_than_the_timeout_bring_the_driver_down_though_writes_still_land(rtu: bool) -> None:
    async def body() -> None:
        async with SimPlc(Belt(), rtu=rtu) as sim, driver(sim) as plc:
            await plc.next_snapshot(0)
            sim.set_delay(0.3)
            await until_health(plc, HealthState.DOWN)
            assert plc.health.errors.get("timeout", 0) >= 1
            beat = sim.value("heartbeat")
            # unlike silence, a late reply's request has taken effect: the PLC still sees the heartbeat beat
            await condition(lambda: sim.value("heartbeat") != beat, what="a heartbeat landing while DOWN")
            sim.set_delay(0)
            await recovers(plc)

    run(body)


def test_link_faults_outlast_a_link_drop_and_are_validated() -> None:
    async def body() -> None:
        async with SimPlc(Belt()) as sim:
            sim.set_silent(True)
            sim.set_exception(4)
            sim.set_delay(0.25)
            await sim.drop_link()
            await sim.restore_link()
            assert sim.link_faults == LinkFaults(silent=True, exception_code=4, delay_s=0.25)
            with pytest.raises(ValueError, match="exception code 256"):
                sim.set_exception(256)
            with pytest.raises(ValueError, match="negative"):
                sim.set_delay(-1)

    run(body)


def test_the_plc_faults_parse_with_their_arguments() -> None:
    assert Fault.parse("plc-silent") == Fault("plc-silent", 1)
    assert Fault.parse("plc-exception=4") == Fault("plc-exception", 4)
    assert Fault.parse("plc-slow=250") == Fault("plc-slow", 250)
    with pytest.raises(FaultError, match="at most 255"):
        Fault.parse("plc-exception=256")
