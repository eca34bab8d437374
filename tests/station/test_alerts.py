"""An INSPECT item's alert from `new` to `end`, customs instructions on stored items, verdicts that answer
customs: the runtime's own recorder and the verdict functions on a real store and the real writer thread,
with real scan files. The runtime's PLC and inference worker are not used by these paths: None stands in.
Every message is checked against the contract's schema as the link would publish it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from station import reviews
from station.alerts import THUMB_MAX_BYTES, THUMB_MAX_SIDE, ThumbnailMissing, thumbnail_file, thumbnail_of
from station.config import LaneSection
from station.contract import problems, schema_for_topic
from station.domain import Detected, Evidence
from station.ead.record import EadRecord
from station.kernel.imaging import load_image
from station.lane import messages as m
from station.lane.core import LaneCore
from station.lane.runtime import LaneRuntime
from station.mqtt_link import Topics, stamp
from station.rules import load_rules
from station.store import Store
from station.writer import StoreWriter
from tests.station.ead.test_ead_record import record_dict

TOPICS = Topics("lhr", "lane-1")
ITEM = "RR473124829GB"
OTHER = "RR000000014FR"
RULES = load_rules()
GUN = Detected("gun", 0.93, (400.0, 300.0, 900.0, 700.0), True)


def scan_file(folder: Path, name: str, seed: int = 1) -> tuple[str, str]:
    """A 2048x1365 16-bit grey scan (noisy enough that the first JPEG quality does not fit), and its SHA-256."""
    rng = np.random.default_rng(seed)
    plane = np.full((1365, 2048), 60000, np.uint16)
    plane[300:1000, 400:1500] = 15000
    plane = (plane + rng.integers(0, 9000, plane.shape)).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    cv2.imwrite(str(path), plane)
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def routed(lane: LaneRuntime, folder: Path, n: int, *, item_id: str = ITEM, threat: bool = False,
           ead: bool = True) -> m.ItemRouted:
    path, sha = scan_file(folder / "spool", f"scan-{n}", seed=n)
    evidence = Evidence(detections=(GUN,) if threat else (), ead_found=ead)
    if ead:
        from station.risk import with_declaration
        evidence = with_declaration(evidence, EadRecord.model_validate(record_dict(item_id=item_id)), ())
    decision = RULES.decide(evidence)
    return m.ItemRouted(
        track_id=n, item_id=item_id, barcode=item_id, scan_id=f"scan-{n}", image_path=path, image_sha256=sha,
        decision=decision.decision, routed=decision.decision, score=decision.score, reasons=decision.reasons,
        detections=evidence.detections, ead_status="found" if ead else "missing", ead_version=1 if ead else None,
        rules_version=decision.rules_version, model_hash="m" * 64, weight_kg=None,
        explanation=decision.explanation_json(), ead_findings=(), image_ready_t=None, decided_t=None)


def run(tmp_path: Path, body: Callable[[LaneRuntime], Awaitable[None]]) -> Store:
    """`body` on a runtime over a real store and writer; returns the store, once every write is done."""
    db = tmp_path / "station.db"

    async def main() -> None:
        async with StoreWriter(db) as writer:
            with Store(db) as reader:
                lane = LaneRuntime(LaneCore(LaneSection(), decide_fn=RULES.decide), reader, writer, TOPICS,
                                   plc=None, spool_dir=tmp_path / "spool", images_dir=tmp_path / "images",  # type: ignore[arg-type]
                                   worker=None)  # type: ignore[arg-type]
                lane.rules_version = RULES.version
                await body(lane)
                await settled(lane)

    asyncio.run(main())
    return Store(db)


async def settled(lane: LaneRuntime) -> None:
    """Until the writer has nothing left, callbacks included (a stored instruction submits its revisions)."""
    for _ in range(3):
        await lane.writer.drained()
        await asyncio.sleep(0.05)


async def store_item(lane: LaneRuntime, item: m.ItemRouted) -> str:
    row, done = lane.recorder.routed(item, None)
    await done
    return row.uid


def instruction(ident: str, kind: str, item_id: str = ITEM, at: str = "2026-03-01T10:00:00Z", **more: Any) -> bytes:
    return json.dumps({"instruction_id": ident, "item_id": item_id, "type": kind, "issued_by": "customs-LHR",
                       "issued_at": at, **({"methods": ["ETD"]} if kind == "screen" else {}), **more}).encode()


async def instruct(lane: LaneRuntime, payload: bytes) -> None:
    lane.customs_message(TOPICS.customs_instructions, payload)
    await settled(lane)


def messages(store: Store) -> list[tuple[str, dict[str, Any]]]:
    """The outbox in order, each payload checked against its topic's schema as the link publishes it."""
    out = []
    for msg in store.outbox_batch(limit=10_000):
        payload = json.loads(msg.payload)
        schema = schema_for_topic(msg.topic)
        assert schema is not None, msg.topic
        assert problems(schema, json.loads(stamp(msg.payload, session=1, seq=1, historical=False))) == [], payload
        assert payload["msg_id"] == msg.msg_id
        out.append((msg.topic, payload))
    return out


def alerts(store: Store, uid: str) -> list[dict[str, Any]]:
    return [p for topic, p in messages(store) if topic == TOPICS.alert and p["alert_id"] == uid]


def jpeg(thumbnail: dict[str, Any]) -> np.ndarray:
    data = base64.b64decode(thumbnail["data"])
    assert len(data) <= THUMB_MAX_BYTES
    picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[:2] == (thumbnail["height"], thumbnail["width"])
    return picture


# ---- the thumbnail -----------------------------------------------------------------------------


def test_the_thumbnail_is_the_standard_view_small_and_within_its_byte_bound(tmp_path: Path) -> None:
    path, _ = scan_file(tmp_path, "scan")
    thumb = thumbnail_file(path)
    assert max(thumb.width, thumb.height) == THUMB_MAX_SIDE and (thumb.width, thumb.height) == (256, 171)
    assert len(thumb.jpeg) <= THUMB_MAX_BYTES and thumb.jpeg[:2] == b"\xff\xd8"
    decoded = cv2.imdecode(np.frombuffer(thumb.jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert decoded is not None
    small = decoded.astype(float)
    standard = cv2.resize(load_image(path).gray, (256, 171), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(small - standard).mean() < 12  # the console's standard view, shrunk (JPEG's error aside)
    with pytest.raises(ThumbnailMissing, match="fits in 200 bytes"):
        thumbnail_of(load_image(path), max_bytes=200)
    with pytest.raises(ThumbnailMissing, match="cannot be read"):
        thumbnail_file(str(tmp_path / "gone.png"))


# ---- the lifecycle -----------------------------------------------------------------------------


def test_an_inspect_item_opens_an_alert_with_its_thumbnail_and_a_clear_one_opens_none(tmp_path: Path) -> None:
    uids: list[str] = []

    async def body(lane: LaneRuntime) -> None:
        uids.append(await store_item(lane, routed(lane, tmp_path, 1, threat=True)))
        uids.append(await store_item(lane, routed(lane, tmp_path, 2, item_id=OTHER)))

    store = run(tmp_path, body)
    sent = messages(store)
    assert [(t.rsplit("/", 1)[1], p["msg_id"]) for t, p in sent] == [
        ("result", f"{uids[0]}/result"), ("alert", f"{uids[0]}/alert"), ("result", f"{uids[1]}/result")]
    (alert,) = alerts(store, uids[0])
    assert (alert["event"], alert["changes"], alert["decision"], alert["scan_id"]) == ("new", [], "INSPECT", "scan-1")
    row = store.find_item(uids[0])
    assert row is not None and alert["image_sha256"] == row["image_sha256"] == sent[0][1]["image_sha256"]
    assert jpeg(alert["thumbnail"]).shape[:2] == (171, 256)


def test_a_hold_after_the_gate_turns_a_clear_item_inspect_with_a_new_alert_and_a_screen_updates_it(
        tmp_path: Path) -> None:
    uid: list[str] = []

    async def body(lane: LaneRuntime) -> None:
        uid.append(await store_item(lane, routed(lane, tmp_path, 1)))
        await instruct(lane, instruction("H-1", "hold", text="profile 7"))
        await instruct(lane, instruction("H-1", "hold"))  # the same again (a QoS 1 redelivery): nothing
        await instruct(lane, instruction("S-1", "screen", at="2026-03-01T10:05:00Z"))
        await instruct(lane, instruction("R-1", "release", at="2026-03-01T10:10:00Z"))  # no revision back to CLEAR

    store = run(tmp_path, body)
    row = store.find_item(uid[0])
    assert row is not None
    assert (row["decision"], row["routed"], row["revision"]) == ("INSPECT", "CLEAR", 3)
    assert {"CUSTOMS_HOLD", "CUSTOMS_SCREEN"} <= {r["code"] for r in json.loads(row["reasons"])}
    new, update = alerts(store, uid[0])
    assert (new["event"], new["msg_id"], new["revision"]) == ("new", f"{uid[0]}/alert/2", 2)
    assert new["changes"] == ["customs: hold", "decision: CLEAR -> INSPECT", "reasons: +CUSTOMS_HOLD"]
    jpeg(new["thumbnail"])  # an alert opened by a revision has its thumbnail too, from the kept scan
    assert (update["event"], update["msg_id"]) == ("update", f"{uid[0]}/alert/3")
    assert update["changes"] == ["customs: screen", "reasons: +CUSTOMS_SCREEN"]
    assert update["thumbnail"] is None and "new" in update["thumbnail_missing"]
    results = [p["msg_id"] for t, p in messages(store) if t == TOPICS.result]
    assert results == [f"{uid[0]}/result", f"{uid[0]}/result/2", f"{uid[0]}/result/3"]


def test_a_verdict_ends_the_alert_and_an_undo_within_30_s_reopens_it(tmp_path: Path) -> None:
    uid: list[str] = []

    async def body(lane: LaneRuntime) -> None:
        uid.append(await store_item(lane, routed(lane, tmp_path, 1, threat=True)))
        pk = int(lane.store.find_item(uid[0])["id"])  # type: ignore[index]

        def judge(store: Store) -> reviews.Verdict:
            return reviews.record_verdict(store, pk, "FALSE_ALARM", "op1", topic=TOPICS.verdict, site="lhr",
                                          lane="lane-1", reason_code="BENIGN_LOOKALIKE", alert_topic=TOPICS.alert,
                                          screening_topic=TOPICS.screening_result)
        given = await lane.writer.submit(judge, want_result=True)  # type: ignore[misc]

        def undo(store: Store) -> reviews.Verdict:
            return reviews.undo_verdict(store, given.id, "op1", topic=TOPICS.verdict, site="lhr", lane="lane-1",
                                        alert_topic=TOPICS.alert)
        await lane.writer.submit(undo, want_result=True)  # type: ignore[misc]
        uid.append(str(given.id))

    store = run(tmp_path, body)
    new, end, reopened = alerts(store, uid[0])
    vid = uid[1]
    assert (end["event"], end["msg_id"], end["changes"]) == ("end", f"{uid[0]}/alert/verdict/{vid}",
                                                             ["verdict: FALSE_ALARM by op1"])
    assert (reopened["event"], reopened["msg_id"], reopened["changes"]) == (
        "update", f"{uid[0]}/alert/verdict/{vid}/undo", ["verdict undone by op1"])
    assert end["decision"] == reopened["decision"] == "INSPECT" and end["scan_id"] == new["scan_id"]
    assert [d["label"] for d in end["detections"]] == ["gun"]
    assert not [t for t, _ in messages(store) if t == TOPICS.screening_result]  # customs never asked


def test_a_late_declaration_that_clears_the_item_ends_its_alert(tmp_path: Path) -> None:
    uid: list[str] = []

    async def body(lane: LaneRuntime) -> None:
        uid.append(await store_item(lane, routed(lane, tmp_path, 1, ead=False)))
        assert lane.declarations_arrived([EadRecord.model_validate(record_dict(item_id=ITEM))]) == 1

    store = run(tmp_path, body)
    new, end = alerts(store, uid[0])
    assert new["event"] == "new" and new["reasons"][0]["code"] == "EAD_MISSING"
    assert (end["event"], end["decision"], end["msg_id"]) == ("end", "CLEAR", f"{uid[0]}/alert/2")
    assert "decision: INSPECT -> CLEAR" in end["changes"] and "reasons: -EAD_MISSING" in end["changes"]


# ---- customs and the verdict --------------------------------------------------------------------


def test_while_customs_holds_an_item_cleared_and_false_alarm_are_refused_and_the_verdict_answers_customs(
        tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def body(lane: LaneRuntime) -> None:
        uid = await store_item(lane, routed(lane, tmp_path, 1))  # clean and CLEAR: customs makes it INSPECT
        await instruct(lane, instruction("D-7", "do_not_load", text="suspected lithium batteries"))
        pk = int(lane.store.find_item(uid)["id"])  # type: ignore[index]

        def give(verdict: str, **more: Any) -> Callable[[Store], reviews.Verdict]:
            return lambda store: reviews.record_verdict(
                store, pk, verdict, "op1", topic=TOPICS.verdict, site="lhr", lane="lane-1", alert_topic=TOPICS.alert,
                screening_topic=TOPICS.screening_result, **more)
        for refused in ("CLEARED", "FALSE_ALARM"):
            held = r"customs holds item \d+ \(do not load, instruction D-7 from customs-LHR\)"
            with pytest.raises(reviews.VerdictError, match=held):
                await lane.writer.submit(give(refused), want_result=True)  # type: ignore[misc]
        with pytest.raises(reviews.VerdictError, match="screening method 'XRAY'"):
            await lane.writer.submit(give("THREAT", threat_class="battery", methods=("XRAY",)), want_result=True)  # type: ignore[misc]
        seen["verdict"] = await lane.writer.submit(  # type: ignore[misc]
            give("THREAT", threat_class="battery", methods=("PHS", "ETD"), note="two cells in the lining",
                 reason_code="DETECTOR_MISSED"), want_result=True)
        seen["uid"] = uid

    store = run(tmp_path, body)
    assert store.db.execute("SELECT count(*) FROM verdicts").fetchone()[0] == 1  # the refusals stored nothing
    (result,) = [p for t, p in messages(store) if t == TOPICS.screening_result]
    row = store.find_item(seen["uid"])
    assert row is not None
    assert result == {
        "msg_id": f"{seen['uid']}/screening_result/D-7/{seen['verdict'].id}", "schema": "customs/v1/screening-result",
        "site": "lhr", "lane": "lane-1", "referral_reference": "D-7", "item_id": ITEM, "result": "THREAT_FOUND",
        "methods": ["XRY", "PHS", "ETD"], "person": "op1", "time": result["time"],
        "scan_reference": {"scan_id": "scan-1", "image_sha256": row["image_sha256"], "item_uid": seen["uid"]},
        "remarks": "two cells in the lining"}
    assert [a["event"] for a in alerts(store, seen["uid"])] == ["new", "end"]


@pytest.mark.parametrize(("verdict", "expected"), [("REFERRED", "INCONCLUSIVE"), ("CLEARED", "NO_THREAT_FOUND")])
def test_after_a_release_any_verdict_is_given_and_still_answers_the_referral(tmp_path: Path, verdict: str,
                                                                            expected: str) -> None:
    async def body(lane: LaneRuntime) -> None:
        uid = await store_item(lane, routed(lane, tmp_path, 1))
        await instruct(lane, instruction("S-1", "screen"))
        await instruct(lane, instruction("R-1", "release", at="2026-03-01T11:00:00Z"))
        pk = int(lane.store.find_item(uid)["id"])  # type: ignore[index]
        await lane.writer.submit(lambda store: reviews.record_verdict(  # type: ignore[misc]
            store, pk, verdict, "op1", topic=TOPICS.verdict, site="lhr", lane="lane-1",
            screening_topic=TOPICS.screening_result), want_result=True)

    store = run(tmp_path, body)
    (result,) = [p for t, p in messages(store) if t == TOPICS.screening_result]
    assert (result["referral_reference"], result["result"], result["methods"]) == ("S-1", expected, ["XRY"])


def test_an_instruction_stored_before_its_item_revises_the_item_as_soon_as_it_is_stored(tmp_path: Path) -> None:
    """The hold came while the item was between the gate and the store (or its CLEAR was on the gate and
    could not be recalled): the item is stored as the lane decided it, and revised in the same job."""
    uid: list[str] = []

    async def body(lane: LaneRuntime) -> None:
        await instruct(lane, instruction("H-1", "hold"))
        uid.append(await store_item(lane, routed(lane, tmp_path, 1)))

    store = run(tmp_path, body)
    row = store.find_item(uid[0])
    assert row is not None and (row["decision"], row["routed"], row["revision"]) == ("INSPECT", "CLEAR", 2)
    assert [a["event"] for a in alerts(store, uid[0])] == ["new"]


def test_an_item_judged_before_customs_asked_answers_with_its_verdict_and_no_alert_reopens(tmp_path: Path) -> None:
    uid: list[str] = []

    async def body(lane: LaneRuntime) -> None:
        uid.append(await store_item(lane, routed(lane, tmp_path, 1, threat=True)))
        pk = int(lane.store.find_item(uid[0])["id"])  # type: ignore[index]
        await lane.writer.submit(lambda store: reviews.record_verdict(  # type: ignore[misc]
            store, pk, "THREAT", "op2", topic=TOPICS.verdict, site="lhr", lane="lane-1", threat_class="gun",
            methods=("PHS",), alert_topic=TOPICS.alert), want_result=True)
        await instruct(lane, instruction("S-9", "screen"))

    store = run(tmp_path, body)
    assert [a["event"] for a in alerts(store, uid[0])] == ["new", "end"]  # the revision opens nothing
    (result,) = [p for t, p in messages(store) if t == TOPICS.screening_result]
    assert (result["result"], result["person"], result["methods"]) == ("THREAT_FOUND", "op2", ["XRY", "PHS"])
    assert "judged before this instruction arrived" in result["remarks"]
    row = store.find_item(uid[0])
    assert row is not None and "CUSTOMS_SCREEN" in {r["code"] for r in json.loads(row["reasons"])}


def test_a_bad_instruction_is_an_alarm_naming_the_problem_and_changes_nothing(tmp_path: Path) -> None:
    async def body(lane: LaneRuntime) -> None:
        await store_item(lane, routed(lane, tmp_path, 1))
        await instruct(lane, instruction("X-1", "seize"))
        await instruct(lane, instruction("X-2", "hold", item_id="RR473124828GB"))  # check digit wrong
        await instruct(lane, b"\x00not json")

    store = run(tmp_path, body)
    assert store.db.execute("SELECT count(*) FROM customs_instructions").fetchone()[0] == 0
    assert [r["revision"] for r in store.items()] == [1]
    details = [r[0] for r in store.db.execute("SELECT detail FROM alarms WHERE code = 'CUSTOMS_REJECTED' ORDER BY id")]
    assert len(details) == 3 and all(d.startswith("customs/v1/lhr/instructions: ") for d in details)
    assert "$.type: 'seize'" in details[0] and "item_id" in details[1] and "not JSON" in details[2]
