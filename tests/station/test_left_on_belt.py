"""What a restarted station records of the items an earlier run left on the belt (real SQLite, the real
writer thread). The runtime's PLC and inference worker are not used by this path: None stands in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from station.config import LaneSection
from station.lane.core import LaneCore
from station.lane.runtime import LaneRuntime
from station.mqtt_link import Topics
from station.store import Store
from station.writer import StoreWriter


def left_then_restarted(tmp_path: Path, kept: dict[str, object]) -> dict[str, object]:
    """An earlier run kept `kept` for one item on the belt, then died; the next start records it."""
    db = tmp_path / "station.db"
    with Store(db) as store:
        store.keep_on_belt("earlier-run/7", kept)

    async def main() -> None:
        async with StoreWriter(db) as writer:
            with Store(db) as reader:
                runtime = LaneRuntime(LaneCore(LaneSection()), reader, writer, Topics("site", "lane-1"),
                                      plc=None, spool_dir=tmp_path / "spool", images_dir=tmp_path / "images",  # type: ignore[arg-type]
                                      worker=None)  # type: ignore[arg-type]
                assert runtime.record_left_on_belt() == 1
            await writer.drained()

    asyncio.run(main())
    with Store(db) as store:
        (row,) = store.items()
        assert store.on_belt() == []
        return dict(row)


def test_an_item_left_on_the_belt_is_recorded_unconfirmed_and_inspect(tmp_path: Path) -> None:
    row = left_then_restarted(tmp_path, {"scan_id": "scan-1", "barcode": "RR473124829GB", "decision": "CLEAR",
                                         "armed": False})
    assert (row["routed"], row["decision"], row["scan_id"]) == ("UNCONFIRMED", "INSPECT", "scan-1")


def test_an_item_whose_clear_was_armed_is_recorded_as_that_clear_even_after_a_later_inspect(tmp_path: Path) -> None:
    """The campaign's one misroute: the gate carried the station's CLEAR for the item, the PLC link was
    lost (every decision on the belt turned INSPECT), and the station was stopped before it saw the gate.
    The item is in the CLEAR bin by the station's own arm: its record must say CLEAR, not INSPECT."""
    row = left_then_restarted(tmp_path, {"scan_id": "scan-2", "barcode": "RR473124829GB", "decision": "INSPECT",
                                         "armed": True})
    assert (row["routed"], row["decision"]) == ("UNCONFIRMED", "CLEAR")
    assert "its CLEAR was on the gate" in json.loads(str(row["reasons"]))[0]["detail"]
