"""Customs instructions reaching items on the belt, in the lane core in virtual time: the simulated PLC
program's bins are the ground truth of where each item went."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.domain import Reason
from station.ead.s10 import make_s10
from station.lane import messages as m
from station.rules import load_rules
from tests.station.lane_harness import Parcel, VirtualLane

IDS = [make_s10("RR", 20_000 + i, "GB") for i in range(3)]
HOLD = Reason("CUSTOMS_HOLD", "customs hold (instruction H-1 from customs-LHR)")


class LaneWithCustoms(VirtualLane):
    """A virtual lane with customs as the runtime brings it: an instruction is stored (look-ups from then on
    answer with it) and told to the core (`CustomsInstructed`), at one moment."""

    held: frozenset[str] = frozenset()

    def hold_at(self, t: float, item_id: str) -> None:
        def instructed() -> None:
            self.held = self.held | {item_id}
            self.feed(m.CustomsInstructed(self.t, item_id, HOLD))
        self.at(t, instructed)

    def _execute(self, cmd: m.Command) -> list[m.Event]:
        out = super()._execute(cmd)
        if isinstance(cmd, m.LookUpEad) and cmd.item_id in self.held:
            return [m.EadResolved(e.t, e.track_id, e.found, e.version, e.record, e.findings, HOLD)
                    for e in out if isinstance(e, m.EadResolved)]
        return out


def lane_of_three(held: frozenset[str] = frozenset()) -> LaneWithCustoms:
    lane = LaneWithCustoms()
    lane.held = held
    lane.core.decide = load_rules().decide
    lane.start()
    lane.add_parcels([Parcel(300, code) for code in IDS], [400.0] * 3)
    return lane


def record_of(lane: VirtualLane, item_id: str) -> m.ItemRouted:
    (record,) = [r for r in lane.routed if r.item_id == item_id]
    return record


def test_an_item_held_before_it_reaches_the_barcode_reader_is_inspected_at_its_look_up() -> None:
    lane = lane_of_three(frozenset({IDS[1]}))
    lane.run_until(8.0)
    assert [lane.outcomes[i].bin for i in range(3)] == ["CLEAR", "INSPECT", "CLEAR"]
    held = record_of(lane, IDS[1])
    assert (held.decision, held.routed) == ("INSPECT", "INSPECT") and "CUSTOMS_HOLD" in {r.code for r in held.reasons}
    assert [r.decision for r in lane.routed] == ["CLEAR", "INSPECT", "CLEAR"]


@settings(max_examples=40)
@given(st.floats(0.0, 6.0))
def test_a_hold_while_the_item_is_on_the_belt_sends_it_to_inspect_or_says_it_could_not(when: float) -> None:
    """At any moment: before the item's deadline it lands in the INSPECT bin with the reason (its CLEAR, if
    armed, is taken back); later, the gate may have carried its CLEAR: then its record says CLEAR with
    the hold noted and CLEAR_NOT_RECALLED is raised (the recorder revises it once stored). Never a
    silent CLEAR; the items around it are not touched."""
    lane = lane_of_three()
    lane.hold_at(when, IDS[1])
    lane.run_until(8.0)
    assert len(lane.routed) == 3
    outcome = lane.outcomes[1]
    held = record_of(lane, IDS[1])
    codes = {r.code for r in held.reasons}
    assert lane.outcomes[0].bin == "CLEAR" and lane.outcomes[2].bin == "CLEAR"
    assert outcome.deadline_t is not None
    if outcome.bin == "INSPECT":
        assert (held.routed, held.decision) == ("INSPECT", "INSPECT")
        assert "CUSTOMS_HOLD" in codes or when > outcome.deadline_t  # too late for the lane: the recorder's
    else:
        assert held.routed == "CLEAR" and when > outcome.deadline_t - 0.3, (when, outcome)
        if "CUSTOMS_HOLD" in codes:  # it came while the item was armed: noted, and said
            assert held.decision == "CLEAR" and any(a.code == "CLEAR_NOT_RECALLED" for a in lane.alarms)
    if when < outcome.deadline_t - 0.3:  # well before its deadline: the lane itself inspects it
        assert (outcome.bin, held.decision) == ("INSPECT", "INSPECT") and "CUSTOMS_HOLD" in codes
    assert not any(a.code == "MISROUTED" for a in lane.alarms)


@pytest.mark.parametrize("item", [0, 2])
def test_a_hold_for_an_item_not_on_the_belt_changes_nothing_there(item: int) -> None:
    lane = lane_of_three()
    lane.hold_at(0.5, make_s10("RR", 99_999, "GB"))
    lane.run_until(8.0)
    assert lane.outcomes[item].bin == "CLEAR" and record_of(lane, IDS[item]).decision == "CLEAR"
