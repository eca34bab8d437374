"""The running lane's model, end to end: swap through the control socket a technician's
`station model load|rollback|status` uses (verify, warm up, swap between images, roll back,
MANUAL_ONLY while the model store cannot be trusted), and the inference watchdog."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from station.cli.simulated import run_simulated
from station.config import ModelSection
from station.daemon import Lane
from station.kernel.detector import DEFAULT_MODEL, write_manifest
from station.store import Store
from tests.station.test_inference import StuckOnce
from tests.test_faults import config, run, station_command, stored, until

pytestmark = pytest.mark.slow  # the whole lane runs: daemon, simulator (and broker)


def variant(dest: Path, note: str) -> Path:
    """A second, valid model: the packaged network with a different ONNX doc string (so another file
    and another SHA-256), and a manifest that describes it, pinned to it."""
    shutil.copytree(DEFAULT_MODEL, dest)
    onnx = dest / "model.onnx"
    text = note.encode()
    onnx.write_bytes(onnx.read_bytes() + bytes([0x32, len(text)]) + text)  # field 6 (doc_string) appended
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest.update(version=f"{manifest['version']}+{note}", sha256=hashlib.sha256(onnx.read_bytes()).hexdigest())
    write_manifest(dest, manifest)  # as `station model pin` does
    return dest


def tampered(dest: Path) -> Path:
    """The packaged model with one byte of its ONNX file changed after the manifest was pinned."""
    shutil.copytree(DEFAULT_MODEL, dest)
    onnx = dest / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    return dest


def test_models_swap_between_items_a_tampered_one_means_manual_only_and_rollback_restores(tmp_path: Path) -> None:
    new = variant(tmp_path / "models" / "new", "swap-test")
    tampered(tmp_path / "models" / "bad")
    new_hash = json.loads((new / "manifest.json").read_text())["pin"]  # what items and status name a model by
    replies: dict[str, dict[str, object]] = {}
    marks: dict[str, int] = {}

    async def station_model(*args: str) -> dict[str, object]:
        """`station model ...` as the technician types it, from the folder the models are in."""
        return await station_command(tmp_path, "model", *args, cwd=tmp_path / "models")

    async def control(lane: Lane) -> None:
        await stored(lane, 3)
        replies["status"] = await station_model("status")
        replies["missing"] = await station_model("load", "nowhere")
        replies["new"] = await station_model("load", "new")
        marks["new"] = lane.runtime.items_stored
        await stored(lane, marks["new"] + 4)
        replies["bad"] = await station_model("load", "bad")
        marks["bad"] = lane.runtime.items_stored
        await stored(lane, marks["bad"] + 4)
        replies["rollback"] = await station_model("rollback")
        marks["rollback"] = lane.runtime.items_stored
        await stored(lane, marks["rollback"] + 8)

    run(tmp_path, control)
    default_hash = replies["status"]["model"]["sha256"]  # type: ignore[index]  # the key holds the pin
    assert default_hash == json.loads((DEFAULT_MODEL / "manifest.json").read_text())["pin"]
    assert replies["status"]["manual_only"] is False and default_hash != new_hash

    assert replies["missing"]["ok"] is False and "nowhere" in str(replies["missing"]["error"])
    assert replies["missing"]["manual_only"] is False, "a path typo must not cost the lane its model"
    assert replies["new"]["ok"] is True and replies["new"]["model"]["sha256"] == new_hash  # type: ignore[index]
    assert replies["bad"]["ok"] is False and "hash mismatch" in str(replies["bad"]["error"])
    assert replies["bad"]["manual_only"] is True
    assert replies["rollback"]["ok"] is True and replies["rollback"]["model"]["sha256"] == new_hash  # type: ignore[index]

    with Store(tmp_path / "station.db") as store:
        items = sorted(store.items(), key=lambda r: r["routed_at"])
        alarms = [(r["code"], r["detail"]) for r in store.db.execute("SELECT code, detail FROM alarms ORDER BY id")]
        audited = [r["action"] for r in store.db.execute("SELECT action FROM audit ORDER BY id")]
    hashes = [r["model_hash"] for r in items]
    reasons = [{x["code"] for x in json.loads(r["reasons"])} for r in items]
    assert set(hashes[: marks["new"] - 1]) == {default_hash}
    # Swaps fall between images: an item is analysed by one model or, once the bad load
    # made the lane MANUAL_ONLY, by none, and then it is inspected for that reason.
    assert new_hash in hashes[marks["new"] : marks["bad"]]
    manual = [i for i, codes in enumerate(reasons) if "MANUAL_ONLY" in codes]
    assert manual, "items scanned while MANUAL_ONLY must say so"
    assert all(items[i]["decision"] == "INSPECT" and hashes[i] is None for i in manual)
    assert marks["bad"] - 2 <= manual[0] and manual[-1] < marks["rollback"] + 2
    after = hashes[marks["rollback"] + 2 :]
    assert after and set(after) == {new_hash}
    assert any(items[i]["decision"] == "CLEAR" for i in range(marks["rollback"] + 2, len(items)))

    codes = [code for code, _ in alarms]
    assert len(audited) == 4 and audited[-1] == "model-rollback"  # load x3 and rollback (status changes nothing)
    assert [c for c in codes if c.startswith("MODEL_")] == ["MODEL_LOAD_FAILED", "MODEL_LOADED", "MODEL_REFUSED", "MODEL_ROLLBACK"]


def test_a_hung_inference_sends_its_item_to_inspect_and_the_next_items_are_analysed(tmp_path: Path) -> None:
    marks: dict[str, object] = {}

    async def control(lane: Lane) -> None:
        await stored(lane, 2)
        real = lane.models.worker.detector
        assert real is not None
        hang = StuckOnce(real)
        marks["before"] = lane.runtime.items_stored
        lane.models.worker.detector = hang  # type: ignore[assignment]
        try:
            await until(lambda: hang.calls >= 1, why="an image reaching the hung detector")
            await until(lambda: lane.models.worker.restarts == 1, why="the watchdog restarting the worker")
            await stored(lane, lane.runtime.items_stored + 4)
        finally:
            hang.release.set()

    asyncio_run(config(tmp_path).model_copy(update={"model": ModelSection(timeout_s=0.4)}), control)
    with Store(tmp_path / "station.db") as store:
        items = sorted(store.items(), key=lambda r: r["routed_at"])
    codes = [{x["code"] for x in json.loads(r["reasons"])} for r in items]
    timed_out = [i for i, c in enumerate(codes) if "INFERENCE_TIMEOUT" in c]
    assert len(timed_out) == 1 and items[timed_out[0]]["decision"] == "INSPECT"
    after = items[timed_out[0] + 1 :]
    assert len(after) >= 3 and all(r["model_hash"] for r in after), "the fresh worker analyses the next scans"
    assert all("INFERENCE_TIMEOUT" not in c and "DECISION_LATE" not in c for c in codes[timed_out[0] + 1 :])


def asyncio_run(cfg: object, control: object) -> None:
    asyncio.run(run_simulated(cfg, control=control))  # type: ignore[arg-type]
