"""Belt physics in virtual time: eyes, events, gate routing, E-stop, and the no-loss property."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.belt import (
    CLEAR, INSPECT, Belt, BeltEvent, Departed, Entered, EnteredTunnel, Geometry, LeftTunnel, ReachedBarcode, Routed, SimItem, Weighed,
)


def running_belt(speed: float = 1000.0, accel: float = 1e9) -> Belt:
    belt = Belt(accel_mm_s2=accel)
    belt.speed_setpoint_mm_s = speed
    belt.run_command = True
    return belt


def run_until(belt: Belt, done, dt: float = 0.01, max_steps: int = 10_000) -> list[BeltEvent]:  # type: ignore[no-untyped-def]
    events: list[BeltEvent] = []
    for _ in range(max_steps):
        events += belt.step(dt)
        if done(events):
            return events
    raise AssertionError(f"condition not reached; events so far {events}")


def test_an_item_walks_past_every_station_in_order() -> None:
    belt = running_belt()
    item = SimItem(index=1, length_mm=300.0)
    assert belt.place(item) and item.lead_mm == Geometry().feed_mm
    seen_entry = False
    events: list[BeltEvent] = []
    while not any(isinstance(e, Departed) for e in events):
        events += belt.step(0.01)
        seen_entry |= belt.eyes["entry_eye"]
    assert [type(e) for e in events] == [Entered, ReachedBarcode, Weighed, EnteredTunnel, LeftTunnel, Routed, Departed]
    assert all(e.item is item for e in events)
    assert seen_entry
    assert belt.items == () and belt.inspected == 1 and belt.cleared == 0


def test_eyes_see_an_item_spanning_them() -> None:
    belt = Belt()
    item = SimItem(index=1, length_mm=200.0)
    belt.place(item)
    assert belt.eyes == {"entry_eye": False, "tunnel_exit_eye": False, "gate_eye": False}
    item.lead_mm = 100.0
    assert belt.eyes["entry_eye"] and not belt.eyes["gate_eye"]
    item.lead_mm = 2600.0
    assert belt.eyes == {"entry_eye": False, "tunnel_exit_eye": False, "gate_eye": True}


def test_gate_output_at_the_instant_the_lead_arrives_decides_the_bin() -> None:
    belt = running_belt()
    first, second = SimItem(1, 300.0), SimItem(2, 300.0)
    belt.place(first)
    routed: list[Routed] = []
    # gate energised while the first item arrives ...
    belt.gate_clear = True
    events = run_until(belt, lambda ev: any(isinstance(e, Routed) for e in ev))
    routed += [e for e in events if isinstance(e, Routed)]
    belt.gate_clear = False  # ... and dropped before the second one arrives
    assert belt.place(second)
    events = run_until(belt, lambda ev: any(isinstance(e, Departed) and e.item is second for e in ev))
    routed += [e for e in events if isinstance(e, Routed)]
    assert [(r.item.index, r.bin) for r in routed] == [(1, CLEAR), (2, INSPECT)]
    assert (belt.cleared, belt.inspected) == (1, 1)


def test_a_belt_that_is_not_commanded_does_not_move() -> None:
    belt = Belt()
    belt.speed_setpoint_mm_s = 1000.0
    belt.place(SimItem(1, 300.0))
    assert belt.step(1.0) == [] and belt.encoder_mm == 0.0 and not belt.running
    belt.run_command = True
    belt.fault_code = 1
    belt.step(1.0)
    assert belt.encoder_mm == 0.0, "a faulted belt must not move"


def test_speed_ramps_with_the_acceleration_and_the_encoder_follows() -> None:
    belt = Belt(accel_mm_s2=4000.0)
    belt.speed_setpoint_mm_s = 1000.0
    belt.run_command = True
    belt.step(0.1)
    assert belt.speed_mm_s == 400.0 and belt.encoder_mm == 20.0  # average of 0 and 400 for 0.1 s
    belt.step(1.0)
    assert belt.speed_mm_s == 1000.0
    belt.run_command = False
    belt.step(0.1)
    assert belt.speed_mm_s == 600.0, "a normal stop ramps down"


def test_estop_stops_at_once_and_drops_the_run_command() -> None:
    belt = running_belt(accel=4000.0)
    belt.step(1.0)
    assert belt.running
    belt.estop = True
    assert belt.speed_mm_s == 0.0 and not belt.running and not belt.run_command
    position = belt.encoder_mm
    belt.run_command = True  # a command while pressed is ignored
    belt.step(0.5)
    assert belt.encoder_mm == position and not belt.run_command
    belt.estop = False
    belt.step(0.5)
    assert belt.encoder_mm == position, "release alone does not restart the belt"


def test_place_refuses_an_item_too_close_to_the_previous_one() -> None:
    belt = running_belt()
    assert belt.place(SimItem(1, 300.0))
    assert not belt.place(SimItem(2, 300.0))
    assert len(belt.items) == 1
    # the previous trailing edge must be min_gap (150 mm) past the feed point: 450 mm of travel
    belt.step(0.449)
    assert not belt.place(SimItem(2, 300.0))
    belt.step(0.002)
    assert belt.place(SimItem(2, 300.0)) and len(belt.items) == 2


def test_one_large_step_reports_events_in_physical_order() -> None:
    belt = running_belt(speed=10_000.0)
    a, b = SimItem(1, 200.0), SimItem(2, 200.0)
    belt.place(a)
    belt.step(0.04)  # a moves ~400 mm: its trail is ~200 mm past the feed point
    belt.place(b)
    events = belt.step(1.0)  # 10 m in one step: both items leave
    departed = [e.item.index for e in events if isinstance(e, Departed)]
    assert departed == [1, 2]
    kinds = [(type(e).__name__, e.item.index) for e in events]
    assert kinds.index(("Routed", 1)) < kinds.index(("Routed", 2)) < kinds.index(("Departed", 2))


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.floats(50.0, 900.0), min_size=1, max_size=8),
    toggles=st.lists(st.booleans(), min_size=1, max_size=200),
    dt=st.sampled_from([0.003, 0.01, 0.05, 0.2]),
)
def test_every_item_is_routed_once_and_departs_in_order(lengths: list[float], toggles: list[bool], dt: float) -> None:
    belt = running_belt(speed=1500.0, accel=5000.0)
    pending = [SimItem(i, length) for i, length in enumerate(lengths)]
    routed: dict[int, list[str]] = {}
    departed: list[int] = []
    expected_bins: dict[int, str] = {}
    for step in range(20_000):
        if pending and belt.place(pending[0]):
            pending.pop(0)
        belt.gate_clear = toggles[step % len(toggles)]
        for event in belt.step(dt):
            if isinstance(event, Routed):
                routed.setdefault(event.item.index, []).append(event.bin)
                expected_bins[event.item.index] = CLEAR if belt.gate_clear else INSPECT
            elif isinstance(event, Departed):
                assert event.item.index in routed, "departed before being routed"
                departed.append(event.item.index)
        if not pending and not belt.items:
            break
    assert departed == list(range(len(lengths)))
    assert all(len(bins) == 1 for bins in routed.values()) and len(routed) == len(lengths)
    assert {i: b[0] for i, b in routed.items()} == expected_bins
    assert belt.cleared + belt.inspected == len(lengths)
    assert belt.cleared == sum(b == [CLEAR] for b in routed.values())
