"""The lane status snapshot as a value: frozen, published only when it says something new, as JSON."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from drivers.health import DeviceHealth, HealthState
from station.alarms import ActiveAlarm, AlarmBook
from station.lane.status import Counters, DeviceStatus, LaneStatus, ModelInfo, OnBelt, Outbox, StatusBoard


def status(seq: int, at: float = 1000.0, **changes: object) -> LaneStatus:
    base = LaneStatus(
        seq=seq, at=at, site="S", lane="L", state="PAUSED", reason="SCANNER_DOWN", manual_only=False,
        model=ModelInfo("tiny", "1.0", "ab" * 32),
        devices=(DeviceStatus.of(DeviceHealth("plc", HealthState.UP, 999.0, "ok", {"timeout": 2})),
                 DeviceStatus.of(DeviceHealth("scanner", HealthState.DOWN, 990.0, "unplugged", {"lost": 1}))),
        outbox=Outbox(3, 990.0, 7), counters=Counters(5, 3, 2, (("NO_READ", 1), ("SCAN_MISSING", 1))),
        on_belt=(OnBelt(4, "RR123456785GB", 812.5, None, False, ("SCAN_MISSING",)),),
        alarms=(ActiveAlarm("SCANNER_DOWN", "unplugged", 995.0, 995.0, 1, "ann", 996.0),),
        unseen_belt_mm=0, store_pending=0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_snapshot_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        status(1).state = "RUNNING"  # type: ignore[misc]


def test_as_json_it_names_devices_errors_reasons_and_the_outbox_age() -> None:
    data = json.loads(json.dumps(status(1).as_dict()))
    assert data["devices"]["scanner"] == {"state": "down", "detail": "unplugged", "last_success": 990.0,
                                          "errors": {"lost": 1}}
    assert data["counters"]["by_reason"] == {"NO_READ": 1, "SCAN_MISSING": 1}
    assert data["outbox"]["oldest_age_s"] == 10.0 and data["model"]["hash"] == "ab" * 32
    assert data["alarms"] == [{"code": "SCANNER_DOWN", "detail": "unplugged", "first_at": 995.0, "last_at": 995.0,
                               "count": 1, "acked_by": "ann", "acked_at": 996.0}]
    assert data["on_belt"][0]["problems"] == ["SCAN_MISSING"]


def test_the_board_publishes_only_what_is_new_and_readers_wait_for_the_next() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        board = StatusBoard()
        assert board.publish(status(1))
        same = board.publish(status(2, at=2000.0))  # only the sequence and the time differ
        waiting = asyncio.ensure_future(board.newer_than(1))
        await asyncio.sleep(0)
        assert not waiting.done()
        changed = board.publish(status(3, state="RUNNING", reason=None))
        return same, changed, (await waiting).seq

    same, changed, seen = asyncio.run(scenario())
    assert not same and changed and seen == 3


def test_the_alarm_book_keeps_raises_acks_and_clears() -> None:
    book = AlarmBook()
    book.raised("SCANNER_DOWN", "unplugged", 1.0)
    book.acked("SCANNER_DOWN", "ann", 2.0)
    book.raised("SCANNER_DOWN", "unplugged again", 3.0)  # news again: the acknowledgement is gone
    alarm = book.get("SCANNER_DOWN")
    assert alarm is not None and alarm.count == 2 and alarm.acked_by is None and alarm.first_at == 1.0
    book.raised("START_REFUSED", "a notice", 4.0)  # notices are history, never active
    assert [a.code for a in book.active] == ["SCANNER_DOWN"]
    assert book.cleared("SCANNER_DOWN") and not book.active and not book.cleared("SCANNER_DOWN")
