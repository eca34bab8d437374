"""The data-quality feedback to the post: every finding tagged with its WCO dimension, late declarations
counted (real SQLite), and the message valid against the contract."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from station.contract import problems
from station.ead.codes import DIMENSIONS, FINDING_DIMENSIONS, LATE
from station.ead.record import EadRecord
from station.ead_quality import _summary, late_declarations, summarise
from station.mqtt_link import stamp
from station.store import ItemRow, Store
from tests.station.ead.test_ead_record import record_dict

REPO = Path(__file__).resolve().parents[3]


def test_every_finding_code_of_the_checks_has_one_wco_dimension() -> None:
    source = (REPO / "station" / "ead" / "checks.py").read_text()
    codes = set(re.findall(r'Reason\(\s*"([A-Z0-9_]+)"', source)) | set(re.findall(r"^- ([A-Z0-9_]+)", source, re.M))
    assert {"EAD_INCOMPLETE", "VAGUE_DESCRIPTION", "WEIGHT_MISMATCH", "CATEGORY_INCONSISTENT"} <= codes  # found
    assert codes | {LATE} == set(FINDING_DIMENSIONS), sorted(codes ^ set(FINDING_DIMENSIONS))
    assert set(FINDING_DIMENSIONS.values()) == set(DIMENSIONS) == {"completeness", "accuracy", "consistency",
                                                                   "timeliness"}


def record(item_id: str, **changes: object) -> EadRecord:
    return EadRecord.model_validate(record_dict(item_id=item_id, **changes))


def test_the_summary_tags_findings_with_their_dimension_and_counts_late_declarations() -> None:
    clean = record("RR473124829GB")
    vague = record("RR000000014FR", contents=[{**record_dict()["contents"][0], "description": "gift"}])
    incomplete_and_off = record("RR000000028FR", total_value=99.0,
                                addressee={**record_dict()["addressee"], "address": ""})
    summary = summarise([clean, vague, incomplete_and_off], 0.0, 60.0, late={"RR000000014FR", "RR473124829GB"})
    dims = summary["dimensions"]
    assert set(dims) == set(DIMENSIONS)
    assert dims["accuracy"] == {"records": 1, "codes": {"VAGUE_DESCRIPTION": 1}}
    assert dims["completeness"] == {"records": 1, "codes": {"EAD_INCOMPLETE": 1}}
    assert dims["consistency"] == {"records": 1, "codes": {"TOTALS_INCONSISTENT": 1}}
    assert dims["timeliness"] == {"records": 2, "codes": {LATE: 2}}
    assert summary["late"] == {"records": 2, "by_origin_country": {"CN": 2}}
    message = {"msg_id": "s/l/ead-quality/60.000", "site": "s", "lane": "l", **summary}
    assert problems("screening/v1/ead-quality", json.loads(stamp(json.dumps(message), session=1, seq=1,
                                                                 historical=False))) == []


def item(uid: str, item_id: str, routed_at: float) -> ItemRow:
    return ItemRow(uid=uid, track_id=1, item_id=item_id, barcode=item_id, scan_id=uid, image_path=None,
                   image_sha256=None, decision="INSPECT", routed="INSPECT", score=0.5,
                   reasons=[{"code": "EAD_MISSING", "detail": "none"}], ead_status="missing", ead_version=None,
                   model_hash=None, rules_version="default-4", decision_latency_ms=None, routed_at=routed_at)


def test_a_declaration_is_late_when_it_is_received_after_its_item_passed_the_gate(tmp_path: Path) -> None:
    path = tmp_path / "station.db"
    with Store(path) as store:
        since = time.time()
        store.record_item(item("u1", "RR473124829GB", since - 5), [])  # passed before its declaration came
        store.upsert_ead(record("RR473124829GB"), source="mqtt")
        store.upsert_ead(record("RR000000014FR"), source="mqtt")  # its item has not come yet
        store.record_item(item("u2", "RR000000014FR", time.time() + 1), [])
        until = time.time() + 10
        assert late_declarations(store, since, until) == {"RR473124829GB"}
        assert late_declarations(store, until, until + 10) == set()  # outside the window
    summary = _summary(path, since, until)
    assert summary is not None and summary["records"] == 2 and summary["late"]["records"] == 1
    assert summary["dimensions"]["timeliness"]["codes"] == {LATE: 1}
