"""The lane core in virtual time: the invariants of docs/architecture.md (fail safe: a track with a reason never gets CLEAR), as examples and as properties."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from station.config import LaneSection
from station.domain import Decision, Evidence
from station.ead.s10 import make_s10
from station.lane import messages as m
from station.lane.core import LaneCore, LaneState
from station.risk import decide
from station.rules import load_rules
from tests.station.lane_harness import Parcel, VirtualLane

Decide = Callable[[Evidence], Decision]
# The lane must behave the same with the built-in rules and with the default rules file that replaces them.
DECIDERS = pytest.mark.parametrize("decide_fn", [decide, load_rules().decide], ids=["builtin", "default-rules"])


def ids(n: int) -> list[str]:
    return [make_s10("RR", 10_000 + i, "GB") for i in range(n)]


def codes(item: m.ItemRouted) -> set[str]:
    return {r.code for r in item.reasons}


def deciding_with(lane: VirtualLane, decide_fn: Decide) -> VirtualLane:
    """The lane, its core deciding with `decide_fn` (before it has seen anything)."""
    lane.core = LaneCore(lane.lane, decide_fn=decide_fn)
    return lane


def run(parcels: list[Parcel], gaps: list[float] | None = None, seconds: float | None = None,
        decide_fn: Decide = decide) -> VirtualLane:
    lane = deciding_with(VirtualLane(), decide_fn)
    lane.start()
    lane.add_parcels(parcels, gaps or [300.0] * len(parcels))
    lane.run_until(seconds or 4.0 + 0.8 * len(parcels))
    return lane


@DECIDERS
def test_clean_items_are_cleared_and_threats_inspected(decide_fn: Decide) -> None:
    parcels = [Parcel(300, code, threat=(i % 3 == 0)) for i, code in enumerate(ids(9))]
    lane = run(parcels, decide_fn=decide_fn)
    assert len(lane.routed) == 9
    for item, outcome in zip(lane.routed, (lane.outcomes[i] for i in range(9))):
        expected = "INSPECT" if outcome.parcel.threat else "CLEAR"
        assert item.decision == expected == outcome.bin, (item, outcome)
        assert item.item_id == outcome.parcel.barcode
    assert all("THREAT_DETECTED" in codes(r) for r in lane.routed if r.decision == "INSPECT")
    assert not [a for a in lane.alarms if a.code in ("MISROUTED", "UNTRACKED_ITEM")]


@DECIDERS
def test_identity_and_ead_problems_send_items_to_inspect(decide_fn: Decide) -> None:
    good = ids(4)
    bad_check = good[1][:10] + str((int(good[1][10]) + 1) % 10) + good[1][11:]
    parcels = [Parcel(300, good[0]), Parcel(300, bad_check), Parcel(300, None), Parcel(300, good[3], has_ead=False)]
    lane = run(parcels, decide_fn=decide_fn)
    assert [r.decision for r in lane.routed] == ["CLEAR", "INSPECT", "INSPECT", "INSPECT"]
    assert "S10_INVALID" in codes(lane.routed[1])
    assert "NO_READ" in codes(lane.routed[2])
    assert "EAD_MISSING" in codes(lane.routed[3])
    assert [lane.outcomes[i].bin for i in range(4)] == ["CLEAR", "INSPECT", "INSPECT", "INSPECT"]


@DECIDERS
def test_late_or_failed_inference_goes_to_inspect(decide_fn: Decide) -> None:
    parcels = [Parcel(300, c) for c in ids(3)]
    parcels[1].inference_s = 5.0  # far past the gate deadline
    parcels[2].inference_fails = True
    lane = run(parcels, decide_fn=decide_fn)
    assert [r.decision for r in lane.routed] == ["CLEAR", "INSPECT", "INSPECT"]
    assert "DECISION_LATE" in codes(lane.routed[1])
    assert "IMAGE_ERROR" in codes(lane.routed[2])
    assert lane.outcomes[1].bin == "INSPECT"


def test_estop_stops_the_belt_and_needs_a_reset() -> None:
    lane = VirtualLane()
    lane.start()
    lane.add_parcels([Parcel(300, c) for c in ids(6)], [300.0] * 6)
    lane.run_until(2.0)
    lane.press_estop()
    lane.run_until(2.5)
    assert lane.core.state is LaneState.ESTOP
    assert not lane.belt.running and not lane.belt.run_command
    lane.release_estop()
    lane.run_until(2.6)
    lane.feed(m.Operator(lane.t, "start"))  # refused: no reset yet
    lane.run_until(3.0)
    assert not lane.belt.running
    assert any(a.code == "START_REFUSED" for a in lane.alarms)
    lane.feed(m.Operator(lane.t, "reset"))
    lane.run_until(3.1)
    lane.feed(m.Operator(lane.t, "start"))
    lane.run_until(12.0)
    assert lane.belt.running
    assert len(lane.routed) == 6
    for item, index in zip(lane.routed, range(6)):
        outcome = lane.outcomes[index]
        if outcome.on_belt_at_estop:
            assert item.decision == outcome.bin == "INSPECT"
            assert "ESTOP" in codes(item)


@pytest.mark.parametrize("reader", ["scanner", "barcode"])
def test_a_silent_reader_pauses_the_belt_after_a_few_items_and_only_a_clear_restarts_it(reader: str) -> None:
    """A reader whose port stays open but which says nothing: three items in a row pass it unread."""
    lane = VirtualLane()
    lane.start()
    lane.add_parcels([Parcel(300, c) for c in ids(12)], [300.0] * 12)
    lane.run_until(2.0)
    lane.unplug(reader, tell=False)
    lane.run_until(12.0)
    code = f"{reader.upper()}_SILENT"
    assert lane.core.state is LaneState.PAUSED and lane.core.fault == code
    assert not lane.belt.running and [a.code for a in lane.alarms].count(code) == 1
    unread = [i for i, o in lane.outcomes.items() if o.unread]
    assert 3 <= len(unread) <= 5, "the pause comes after a few items, before the inspection bin floods"
    assert all(lane.outcomes[i].bin in ("INSPECT", None) for i in unread)
    lane.replug(reader)
    lane.run_until(13.0)
    assert not lane.belt.running, "the reader answering again is not enough: the operator clears the alarm"
    lane.feed(m.AlarmCleared(lane.t, code))
    lane.run_until(30.0)
    assert lane.core.state is LaneState.RUNNING and not lane.belt.items
    assert all(o.bin is not None for o in lane.outcomes.values())


def test_a_reader_reported_down_holds_the_belt_at_once_and_its_clear_waits_for_it() -> None:
    lane = VirtualLane()
    lane.start()
    lane.add_parcels([Parcel(300, c) for c in ids(6)], [300.0] * 6)
    lane.run_until(1.5)
    lane.unplug("scanner")
    assert lane.core.state is LaneState.PAUSED and "SCANNER_DOWN" in lane.core.holds
    assert "still not usable" in lane.core.why_held("SCANNER_DOWN")
    lane.run_until(4.0)
    assert not lane.belt.running
    lane.replug("scanner")
    assert lane.core.why_held("SCANNER_DOWN") == ""
    lane.feed(m.AlarmCleared(lane.t, "SCANNER_DOWN"))
    lane.run_until(20.0)
    assert lane.core.state is LaneState.RUNNING and len(lane.routed) == 6


def test_plc_link_loss_faults_the_lane_and_items_go_to_inspect() -> None:
    lane = VirtualLane()
    lane.start()
    lane.add_parcels([Parcel(300, c) for c in ids(4)], [300.0] * 4)
    lane.run_until(1.5)
    on_belt = [it.index for it in lane.belt.items if it.lead_mm > 0]
    lane.feed(m.PlcLink(lane.t, False, "timeout"))
    assert lane.core.state is LaneState.FAULT
    lane.run_until(3.0)  # polls answer again; the lane stays faulted until an operator acts
    assert lane.core.state is LaneState.FAULT and not lane.belt.running  # the station's stop was best effort
    lane.feed(m.Operator(lane.t, "reset"))
    lane.feed(m.Operator(lane.t, "start"))
    lane.run_until(10.0)
    routed_on_belt = [r for r, i in zip(lane.routed, range(len(lane.routed))) if i in on_belt]
    assert len(routed_on_belt) == len(on_belt) >= 1
    assert all(r.decision == "INSPECT" and "PLC_LINK_LOST" in codes(r) for r in routed_on_belt)


def test_a_poll_gap_longer_than_the_read_window_faults_the_lane() -> None:
    lane = VirtualLane(poll_s=0.2)  # 200 mm of belt between polls at 1 m/s: gaps between items can be missed
    lane.start()
    lane.add_parcels([Parcel(300, c) for c in ids(2)], [300.0] * 2)
    lane.run_until(1.0)
    assert lane.core.state is LaneState.FAULT and lane.core.fault == "PLC_POLL_TOO_SLOW"
    assert not lane.belt.running


def test_an_untracked_item_at_the_gate_is_reported_not_lost() -> None:
    lane = run([Parcel(300, c) for c in ids(2)])
    before = len(lane.routed)
    lane.feed(lane.snapshot())
    values = dict(lane.snapshot().values)
    values["gate_eye"] = True
    lane.feed(m.Snapshot(lane.t, values))  # something crossed the gate eye with no track
    lane.feed(m.Snapshot(lane.t + lane.poll_s, values))  # the poll that reads where the diverter sent it
    assert len(lane.routed) == before + 1
    phantom = lane.routed[-1]
    assert phantom.decision == "INSPECT" and "UNTRACKED_ITEM" in codes(phantom)


parcel_strategy = st.builds(
    Parcel,
    length_mm=st.floats(200, 500),
    barcode=st.sampled_from(["to-be-numbered"] * 5 + [None]),
    threat=st.booleans(),
    inference_s=st.one_of(st.floats(0.005, 0.3), st.floats(0.3, 3.0)),
    inference_fails=st.sampled_from([False] * 4 + [True]),
    has_ead=st.booleans(),
)


@DECIDERS
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parcels=st.lists(parcel_strategy, min_size=1, max_size=12),
    gaps=st.lists(st.floats(150, 800), min_size=12, max_size=12),
    speed=st.floats(400, 1800),
    estop_at=st.one_of(st.none(), st.floats(0.5, 6.0)),
    write_latency=st.one_of(st.just(0.004), st.floats(0.001, 0.15)),  # a loaded PLC link: writes land late
    torn_feedback=st.booleans(),
)
def test_lane_invariants(decide_fn: Decide, parcels: list[Parcel], gaps: list[float], speed: float,
                         estop_at: float | None, write_latency: float, torn_feedback: bool) -> None:
    unique = ids(len(parcels))
    for i, parcel in enumerate(parcels):
        parcel.barcode = unique[i] if parcel.barcode is not None else None
    lane = deciding_with(VirtualLane(lane=VirtualLane().lane.model_copy(update={"belt_speed_mm_s": speed}),
                                     write_latency_s=write_latency, torn_feedback=torn_feedback), decide_fn)
    lane.start()
    lane.add_parcels(parcels, gaps)
    if estop_at is not None:
        lane.run_until(estop_at)
        lane.press_estop()
        lane.run_until(estop_at + 0.2)
        lane.release_estop()
        lane.run_until(lane.t + 0.05)  # the operator sees the E-stop released, then resets
        lane.feed(m.Operator(lane.t, "reset"))
        lane.run_until(lane.t + 0.05 + write_latency)  # the operator sees the reset take effect, then starts
        lane.feed(m.Operator(lane.t, "start"))
    travel_mm = 400 + sum(p.length_mm for p in parcels) + sum(gaps[: len(parcels)]) + lane.lane.gate_mm + 500
    lane.run_until(lane.t + 1.0 + travel_mm / speed)

    placed = len(lane.outcomes)
    # Every item that reached the gate is reported exactly once, in belt order.
    reached = [i for i in range(placed) if lane.outcomes[i].bin is not None]
    assert len(lane.routed) == len(reached) == placed
    assert not [a for a in lane.alarms if a.code == "UNTRACKED_ITEM"]
    for item, index in zip(lane.routed, reached):
        outcome = lane.outcomes[index]
        # The bin is what the station recorded; nothing went to CLEAR against the decision.
        assert item.routed == outcome.bin
        assert item.decision == outcome.bin
        if item.decision == "CLEAR":
            # Cleared only with a finished inference, no threat, and a decision before the deadline.
            assert not outcome.parcel.threat and not outcome.parcel.inference_fails
            assert outcome.parcel.barcode is not None and outcome.parcel.has_ead
            assert item.decided_t is not None and outcome.deadline_t is not None
            assert item.decided_t <= outcome.deadline_t
            assert not outcome.on_belt_at_estop
        else:
            assert item.reasons, "every INSPECT decision carries a reason"


def test_a_jammed_item_is_reported_missing_and_stops_the_belt() -> None:
    lane = VirtualLane()
    lane.start()
    lane.add_parcels([Parcel(300, c) for c in ids(4)], [300.0] * 4)
    lane.run_until(2.2)
    jammed = next(it for it in lane.belt.items if 1300 < it.lead_mm < 2300)
    lane.belt._items.remove(jammed)  # stuck on a side guide: it never reaches the gate eye
    lane.run_until(6.0)
    missing = [r for r in lane.routed if r.routed == "MISSING"]
    assert len(missing) == 1 and "ITEM_MISSING" in codes(missing[0]) and missing[0].decision == "INSPECT"
    assert lane.core.state is LaneState.FAULT and lane.core.fault == "JAM"
    assert not lane.belt.running


def test_touching_items_are_held_at_inspect_together() -> None:
    lane = VirtualLane()
    lane.belt.min_gap_mm = 0.0
    lane.start()
    parcels = [Parcel(450, c) for c in ids(3)]
    lane.add_parcels(parcels, [300.0, 0.0, 300.0])  # the second touches the first
    lane.run_until(9.0)
    assert [lane.outcomes[i].bin for i in range(3)] == ["INSPECT", "INSPECT", "CLEAR"]
    first = lane.routed[0]
    assert first.decision == "INSPECT" and "ITEM_TOO_LONG" in codes(first)
    assert any(a.code == "ITEM_TOO_LONG" for a in lane.alarms)


def test_a_gate_write_that_lands_too_late_never_routes_the_next_item() -> None:
    """The CLEAR for one item lands after it passed (a loaded link); the PLC keeps it for the next item,
    which is a threat. The station must take the stale CLEAR back before that item arrives."""
    lane = VirtualLane(lane=VirtualLane().lane.model_copy(update={"belt_speed_mm_s": 1500.0}), write_latency_s=0.11)
    lane.start()
    parcels = [Parcel(250, c, threat=(i % 2 == 1)) for i, c in enumerate(ids(8))]
    lane.add_parcels(parcels, [150.0] * 8)
    lane.run_until(12.0)
    assert len(lane.routed) == 8
    for item, index in zip(lane.routed, range(8)):
        assert item.decision == lane.outcomes[index].bin, (index, item.reasons)
        if lane.outcomes[index].parcel.threat:
            assert lane.outcomes[index].bin == "INSPECT"


def test_where_an_item_went_is_read_after_the_poll_that_saw_it_reach_the_gate() -> None:
    """On a PLC whose poll takes several requests, the diverter's report can be read before the scan that
    routed the item whose gate-eye edge the same poll shows, so it still says where the previous item went.
    Items alternate INSPECT and CLEAR: reading that stale report would record each one in the other's bin."""
    lane = VirtualLane(torn_feedback=True)
    lane.start()
    parcels = [Parcel(300, c, threat=(i % 2 == 0)) for i, c in enumerate(ids(6))]
    lane.add_parcels(parcels, [300.0] * 6)
    lane.run_until(9.0)
    assert [lane.outcomes[i].bin for i in range(6)] == ["INSPECT", "CLEAR"] * 3
    assert [(r.decision, r.routed) for r in lane.routed] == [("INSPECT", "INSPECT"), ("CLEAR", "CLEAR")] * 3
    assert not [a for a in lane.alarms if a.code in ("GATE_NOT_SET", "MISROUTED")]


@pytest.mark.parametrize("threat", [True, False], ids=["inspect", "armed-clear"])
def test_an_item_whose_diverter_report_is_lost_with_the_plc_link_is_recorded_unconfirmed(threat: bool) -> None:
    """The poll that saw the item reach the gate came; the PLC link dropped before the next one, which
    was to say where the diverter sent it. The record must not guess: UNCONFIRMED, and INSPECT unless
    the gate carried the station's own CLEAR for this item (then it may be in the CLEAR bin, rightly)."""
    lane = VirtualLane()
    lane.start()
    lane.add_parcels([Parcel(300, c, threat=threat) for c in ids(1)], [300.0])
    while not lane.core.values.get("gate_eye"):
        lane.run_until(lane.t + lane.poll_s)
    assert lane.routed == []  # where it went is read from the next poll
    lane.feed(m.PlcLink(lane.t, False, "timeout"))
    lane.run_until(lane.t + 0.5)
    assert len(lane.routed) == 1
    item = lane.routed[0]
    assert item.routed == "UNCONFIRMED" and "ROUTING_UNCONFIRMED" in codes(item)
    assert item.decision == lane.outcomes[0].bin == ("INSPECT" if threat else "CLEAR")


def test_positions_stay_right_across_the_encoders_wrap() -> None:
    """The audit: started 40 m short of the u32 wrap, the lane sent every item after it to CLEAR."""
    lane = VirtualLane()
    lane.plc.shift_encoder(2**32 - 2_000)  # wraps 2 m of belt after the start
    lane.start()
    parcels = [Parcel(300, c, threat=(i % 2 == 0)) for i, c in enumerate(ids(10))]
    lane.add_parcels(parcels, [300.0] * 10)
    lane.run_until(14.0)
    assert lane.core.encoder.raw is not None and lane.core.encoder.raw < 2**31, "the count wrapped"
    assert [lane.outcomes[i].bin for i in range(10)] == ["INSPECT", "CLEAR"] * 5
    assert [r.routed for r in lane.routed] == ["INSPECT", "CLEAR"] * 5
    assert lane.core.state is LaneState.RUNNING


def test_a_clear_the_station_did_not_write_is_a_mismatch_and_the_item_at_the_gate_goes_to_inspect() -> None:
    """A technician writes gate_clear (with an expiry far ahead) while a threat approaches the gate: the
    poll reads a CLEAR the station did not ask for, the station writes INSPECT back and says so."""
    lane = VirtualLane()
    lane.start()
    lane.add_parcels([Parcel(300, c, threat=True) for c in ids(1)], [300.0])
    while not lane.core.tracks or lane.core.tracks[0].lead(lane.core.position_mm or 0) < 1800:
        lane.run_until(lane.t + lane.poll_s)
    lane.plc.set("gate_clear_until_mm", (lane.plc.encoder + 100_000) % 2**32)
    lane.plc.set("gate_clear", True)
    lane.run_until(lane.t + 4.0)
    assert lane.outcomes[0].bin == "INSPECT"
    (item,) = lane.routed
    assert item.decision == "INSPECT" and "GATE_MISMATCH" in codes(item)
    assert [a.code for a in lane.alarms].count("GATE_MISMATCH") == 1


def test_items_closer_than_the_gate_can_separate_both_go_to_inspect() -> None:
    lane = VirtualLane(lane=LaneSection(min_gap_mm=60))
    lane.start()
    lane.add_parcels([Parcel(300, c) for c in ids(3)], [300.0, 40.0, 300.0])  # the second 40 mm behind the first
    lane.run_until(9.0)
    assert [lane.outcomes[i].bin for i in range(3)] == ["INSPECT", "INSPECT", "CLEAR"]
    assert ["ITEMS_TOO_CLOSE" in codes(r) for r in lane.routed] == [True, True, False]


def test_a_clear_that_lands_late_expires_before_the_item_behind_can_take_it() -> None:
    """Writes land 300 ms late (more than the pitch between these items): without the expiry the CLEAR of
    the first would route the threat behind it to CLEAR."""
    lane = VirtualLane(lane=VirtualLane().lane.model_copy(update={"belt_speed_mm_s": 1500.0}), write_latency_s=0.3)
    lane.start()
    parcels = [Parcel(250, c, threat=(i % 2 == 1)) for i, c in enumerate(ids(8))]
    lane.add_parcels(parcels, [150.0] * 8)
    lane.run_until(12.0)
    assert len(lane.routed) == 8 and lane.plc.expired_clears > 0
    for item, index in zip(lane.routed, range(8)):
        assert item.routed == lane.outcomes[index].bin, (index, item.reasons)
        if lane.outcomes[index].parcel.threat:
            assert lane.outcomes[index].bin == "INSPECT"


def test_an_encoder_jump_found_as_the_link_comes_back_leaves_a_lane_that_recovers() -> None:
    """The PLC restarts during a link outage (its counter starts again): the station finds the jump at
    the first poll after the outage. Every item on the belt goes to INSPECT; once the operator resets
    and starts, an item seen end to end is cleared again (the outage's blind zone ended with it)."""
    lane = VirtualLane()
    lane.start()
    before, after = ids(4)[:3], ids(4)[3]
    lane.add_parcels([Parcel(300, c) for c in before], [300.0, 400.0, 400.0])
    lane.run_until(1.2)
    lane.lose_link(1.5)
    lane.run_until(lane.t + 0.5)
    lane.plc.shift_encoder(-50_000)
    lane.run_until(lane.t + 1.5)
    assert lane.core.fault == "ENCODER_JUMP"
    lane.feed(m.Operator(lane.t, "reset"))
    lane.run_until(lane.t + 0.1)
    lane.feed(m.Operator(lane.t, "start"))
    lane.run_until(lane.t + 6.0)
    assert [o.bin for o in lane.outcomes.values()] == ["INSPECT"] * 3
    lane.add_parcels([Parcel(300, after)], [300.0])
    lane.run_until(lane.t + 6.0)
    assert lane.outcomes[3].bin == "CLEAR"
    (record,) = [r for r in lane.routed if r.barcode == after]
    assert record.decision == record.routed == "CLEAR"


# Three items 10 mm apart (A, B, C), between two clean ones. At 1 m/s and a poll every 20 ms, a 10 mm gap
# is seen at an eye only if a poll falls while it passes, and the polls' phase at the entry eye and at the
# gate eye are independent: the first item's gap sets the phase at both eyes, the gate's place the phase
# there. B's length sets whether the gaps before and after it fall at the same phase (both seen or
# neither) or at opposite ones (one of the two). Each case names the gaps each eye saw: AB, BC.
CLOSE_CASES = {
    # entry eye / gate eye: (B's length, the first item's gap, gate_mm), each inside a 10 mm band of phases
    "entry-none/gate-none": (250, 306, 2520),
    "entry-none/gate-both": (250, 306, 2510),
    "entry-both/gate-none": (250, 316, 2510),
    "entry-both/gate-both": (250, 316, 2520),
    "entry-BC/gate-BC": (260, 306, 2520),
    "entry-BC/gate-AB": (260, 306, 2510),
    "entry-AB/gate-BC": (260, 316, 2510),  # the end-to-end run's JAM: B+C one track, no edge at the gate
    "entry-AB/gate-AB": (260, 316, 2520),
}


def seen(case: str, eye: str) -> set[int]:
    """The items (2: B, 3: C) whose gap to the item ahead the case says `eye` saw."""
    said = case.split("/")[0 if eye == "entry_eye" else 1].split("-")[1]
    return {"none": set(), "both": {2, 3}, "AB": {2}, "BC": {3}}[said]


@pytest.mark.parametrize("case", list(CLOSE_CASES))
def test_close_items_go_to_inspect_and_the_belt_runs_on_whichever_gaps_each_eye_sees(case: str) -> None:
    """What the entry eye saw as one item may reach the gate eye as two, and two as one. Either way each
    item is recorded once, in belt order, where it really went (INSPECT: the gate cannot part them), and
    no close item is taken for a jam."""
    b_mm, first_gap_mm, gate_mm = CLOSE_CASES[case]
    lane = VirtualLane(lane=LaneSection(gate_mm=gate_mm), physics_dt=0.001)
    lane.belt.min_gap_mm = 0.0
    lane.start()
    lane.add_parcels([Parcel(length, code) for length, code in zip([300, 250, b_mm, 250, 300], ids(5), strict=True)],
                     [300.0, first_gap_mm, 10.0, 10.0, 300.0])
    lane.run_until(7.0)
    assert not {a.code for a in lane.alarms} & {"JAM", "ITEM_MISSING", "UNTRACKED_ITEM", "MISROUTED", "GATE_NOT_SET"}
    assert lane.core.state is LaneState.RUNNING and lane.belt.running
    for eye in ("entry_eye", "gate_eye"):  # the polls fell as the case says (the simulator's ground truth)
        assert lane.gaps_seen[eye] & {2, 3} == seen(case, eye), (eye, lane.gaps_seen[eye])
    bins = [lane.outcomes[i].bin for i in range(5)]
    assert bins == ["CLEAR", "INSPECT", "INSPECT", "INSPECT", "CLEAR"]
    assert [r.scan_id for r in lane.routed] == [f"scan-{i}" for i in range(5)]
    for record, bin_ in zip(lane.routed, bins, strict=True):
        assert record.routed == record.decision == bin_, (record.scan_id, record.reasons)
    for record in lane.routed[1:4]:
        assert codes(record) & {"ITEMS_TOO_CLOSE", "MULTIPLE_ITEMS"}, (record.scan_id, record.reasons)


def test_a_companion_the_gate_sent_to_clear_on_its_own_is_a_misroute_alarm() -> None:
    """A, B and C look like one item at the entry eye and like three at the gate eye; a technician's CLEAR
    lands just before B arrives. B's record was written with A's (INSPECT, the gate held for A's whole
    extent), so its own edge at the gate is checked against the diverter's report: the CLEAR bin is loud."""
    b_mm, first_gap_mm, gate_mm = CLOSE_CASES["entry-none/gate-both"]
    lane = VirtualLane(lane=LaneSection(gate_mm=gate_mm), physics_dt=0.001)
    lane.belt.min_gap_mm = 0.0
    lane.start()
    lane.add_parcels([Parcel(length, code) for length, code in zip([300, 250, b_mm, 250, 300], ids(5), strict=True)],
                     [300.0, first_gap_mm, 10.0, 10.0, 300.0])

    def clear_before_b() -> None:  # checked every millisecond, without moving the polls
        b = next((it for it in lane.belt.items if it.index == 2), None)
        if b is None or b.lead_mm < gate_mm - 3:
            lane.at(lane.t + 0.001, clear_before_b)
            return
        lane.plc.set("gate_clear_until_mm", (lane.plc.encoder + 100_000) % 2**32)
        lane.plc.set("gate_clear", True)

    lane.at(0.0, clear_before_b)
    lane.run_until(7.0)
    assert lane.gaps_seen["entry_eye"] & {2, 3} == set() and lane.gaps_seen["gate_eye"] >= {2, 3}
    assert [lane.outcomes[i].bin for i in range(5)] == ["CLEAR", "INSPECT", "CLEAR", "INSPECT", "CLEAR"]
    (misrouted,) = [a for a in lane.alarms if a.code == "MISROUTED"]
    assert "scan-2" in misrouted.detail
    assert not {a.code for a in lane.alarms} & {"JAM", "UNTRACKED_ITEM"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.floats(150, 500), min_size=3, max_size=7),
    gaps=st.lists(st.one_of(st.floats(0, 40), st.floats(150, 400)), min_size=7, max_size=7),
    speed=st.floats(600, 1800),
    gate_offset=st.floats(0, 40),  # the polls' phase at the gate eye against the entry eye's
    torn_feedback=st.booleans(),
    threats=st.lists(st.booleans(), min_size=7, max_size=7),
)
def test_items_at_any_spacing_are_each_recorded_once_where_they_went_and_none_is_taken_for_a_jam(
        lengths: list[float], gaps: list[float], speed: float, gate_offset: float, torn_feedback: bool,
        threats: list[bool]) -> None:
    n = len(lengths)
    gaps = [300.0, *gaps[1:n]]
    lane = VirtualLane(lane=LaneSection(belt_speed_mm_s=speed, gate_mm=2500 + gate_offset), physics_dt=0.002,
                       torn_feedback=torn_feedback)
    # A block of items closer than a poll's travel is one track at the entry eye: it must still be on the belt
    # when its last item starts its scan, or that scan has no item to belong to.
    block, longest = 0.0, 0.0
    for length, gap in zip(lengths, gaps, strict=True):
        block = block + gap + length if gap < 40 else length
        longest = max(longest, block)
    assume(longest < lane.lane.gate_mm - lane.lane.tunnel_start_mm - lane.lane.read_window_mm)
    lane.belt.min_gap_mm = 0.0
    lane.start()
    lane.add_parcels([Parcel(length, code, threat=threat) for length, code, threat in zip(lengths, ids(n), threats)],
                     gaps)
    lane.run_until(2.0 + (sum(lengths) + sum(gaps) + 3500) / speed)
    assert not {a.code for a in lane.alarms} & {"JAM", "ITEM_MISSING", "UNTRACKED_ITEM", "MISROUTED", "TRACKING_SLIP"}
    bins = [lane.outcomes[i].bin for i in range(n)]
    assert len(lane.outcomes) == n and None not in bins
    by_scan = [r for r in lane.routed if r.scan_id is not None]
    assert sorted(r.scan_id for r in by_scan) == sorted(f"scan-{i}" for i in range(n))  # each once
    for record in by_scan:
        assert record.routed == record.decision == bins[int(record.scan_id.split("-")[1])], record  # type: ignore[union-attr]
    # A second label in a merged block can be paired with the scan of the item behind it: its own record,
    # without a scan, is INSPECT like the rest of the block.
    assert all(r.decision == r.routed == "INSPECT" and "MULTIPLE_ITEMS" in codes(r) for r in lane.routed if r.scan_id is None)
    near_mm = lane.lane.min_gap_mm - speed * lane.physics_dt  # the feed may leave up to a physics step more
    for i, outcome in lane.outcomes.items():
        close = gaps[i] < near_mm or (i + 1 < n and gaps[i + 1] < near_mm)
        if close or outcome.parcel.threat:
            assert outcome.bin == "INSPECT", (i, gaps, lane.lane.min_gap_mm)
