"""`station model eval|bench|verify|pin` as a technician runs them, on the packaged model and on
files our own generator writes."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.xde import encode_xde
from simulator.xray import synth_parcel
from station.cli.model import add_model_commands
from station.kernel.detector import DEFAULT_MODEL, Detector, ModelError, ModelIntegrityError

DEFAULT = DEFAULT_MODEL


def model(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run `station model ...` in-process (parser built here, as station.cli builds it)."""
    parser = argparse.ArgumentParser(prog="station")
    add_model_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(["model", *argv])
    code = int(args.handler(args))
    return code, capsys.readouterr().out


def test_verify_passes_on_the_packaged_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = model(capsys, "verify", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"]
    assert [c["check"] for c in report["checks"]] == ["manifest", "sha256", "pin", "input", "output", "inference"]


def test_verify_fails_on_a_flipped_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "model"
    shutil.copytree(DEFAULT, copy)
    blob = bytearray((copy / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0x01  # inside the weights: the file still loads, its hash differs
    (copy / "model.onnx").write_bytes(bytes(blob))
    want = json.loads((copy / "manifest.json").read_text())["sha256"][:12]
    code, out = model(capsys, "verify", "--model", str(copy))
    assert code == 1
    assert f"FAIL  sha256     sha256 mismatch: manifest {want}... file " in out
    assert "FAIL  pin        pin mismatch: " in out  # the pin covers the file too
    assert "pass  manifest" in out and "pass  inference" in out


def station(*argv: str) -> subprocess.CompletedProcess[str]:
    """`station ...` in a process of its own, as a technician types it."""
    return subprocess.run([sys.executable, "-m", "station.cli", *argv], check=False, capture_output=True, text=True, timeout=120)


def _manifest(model_dir: Path) -> dict[str, object]:
    return json.loads((model_dir / "manifest.json").read_text())  # type: ignore[no-any-return]


def test_the_audits_manifest_fails_verify_and_pin_and_an_unpinned_edit_loads_only_once_pinned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The audit's case, end to end: thresholds 1.5 and no threat class pass no check; an edit
    within bounds is refused as unpinned until the model owner pins it, and then names a new pin."""
    copy = tmp_path / "model"
    shutil.copytree(DEFAULT, copy)
    original = _manifest(copy)
    (copy / "manifest.json").write_text(json.dumps({**original, "thresholds": dict.fromkeys(original["classes"], 1.5), "threat_classes": []}))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="threat_classes") as err:
        Detector.load(copy, threads=1)
    assert "thresholds.gun" in str(err.value) and not isinstance(err.value, ModelIntegrityError)
    proc = station("model", "verify", "--model", str(copy))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  manifest" in proc.stdout and "thresholds.shuriken" in proc.stdout and "threat_classes" in proc.stdout
    assert "pass  sha256" in proc.stdout and "FAIL  pin" in proc.stdout
    bad = (copy / "manifest.json").read_text()
    code, out = model(capsys, "pin", str(copy))
    assert code == 1 and (copy / "manifest.json").read_text() == bad, "pin must refuse a manifest out of bounds"

    edited = {**original, "thresholds": {**original["thresholds"], "gun": 0.99}}  # type: ignore[dict-item]
    assert original["thresholds"]["gun"] == 0.25  # type: ignore[index]
    (copy / "manifest.json").write_text(json.dumps(edited, indent=2))
    with pytest.raises(ModelIntegrityError, match="pin mismatch"):
        Detector.load(copy, threads=1)
    assert station("model", "verify", "--model", str(copy)).returncode == 1
    code, out = model(capsys, "pin", str(copy))
    assert code == 0
    assert f"old pin {original['pin']}\n" in out
    new_pin = _manifest(copy)["pin"]
    assert f"new pin {new_pin}" in out and new_pin != original["pin"]
    assert _manifest(copy) == {**edited, "pin": new_pin}, "pinning changes nothing but the pin"
    assert list(_manifest(copy)).index("pin") == list(_manifest(copy)).index("sha256") + 1
    det = Detector.load(copy, threads=1)
    assert det.model_hash == new_pin != original["pin"] and det.manifest.thresholds["gun"] == 0.99
    proc = station("model", "verify", "--model", str(copy), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"] is True, proc.stdout


def test_pin_is_idempotent_on_the_packaged_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "model"
    shutil.copytree(DEFAULT, copy)
    code, out = model(capsys, "pin", str(copy), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["pin"] == report["old_pin"] == _manifest(DEFAULT)["pin"]
    assert (copy / "manifest.json").read_bytes() == (DEFAULT / "manifest.json").read_bytes()


def test_pin_refuses_a_manifest_whose_sha256_is_not_its_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A changed ONNX file is not pinned over: its sha256 must be updated on purpose first."""
    copy = tmp_path / "model"
    shutil.copytree(DEFAULT, copy)
    with (copy / "model.onnx").open("ab") as f:
        f.write(b"\x00")
    before = (copy / "manifest.json").read_text()
    code, _ = model(capsys, "pin", str(copy))
    assert code == 1 and (copy / "manifest.json").read_text() == before
    assert model(capsys, "pin", str(tmp_path / "nothing"))[0] == 2


def test_verify_cannot_run_without_a_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert model(capsys, "verify", "--model", str(tmp_path / "nothing"))[0] == 2


def _write_scans(folder: Path, threats: tuple[str, ...], count: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        scan = synth_parcel(rng, threats)
        (folder / f"scan-{i}.xde").write_bytes(encode_xde(scan.high, scan.low))


def test_eval_on_a_folder_per_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_scans(tmp_path / "set" / "gun", ("gun",), 3, 1)
    _write_scans(tmp_path / "set" / "razor", ("blade",), 2, 2)
    _write_scans(tmp_path / "set" / "clutter", (), 3, 3)
    good = (tmp_path / "set" / "clutter" / "scan-0.xde").read_bytes()
    (tmp_path / "set" / "clutter" / "cut.xde").write_bytes(good[: len(good) // 3])
    png = tmp_path / "figures" / "pr.png"
    code, out = model(capsys, "eval", str(tmp_path / "set"), "--threat-folders", "razor=blade", "--pr-curve", str(png), "--json")
    r = json.loads(out)
    assert code == 1  # it ran; one image could not be read
    assert [e["path"] for e in r["errors"]] == [str(tmp_path / "set" / "clutter" / "cut.xde")]
    assert r["mode"] == "folders" and r["images"] == 8
    gun = r["folders"]["gun"]
    assert (gun["role"], gun["scored_as"], gun["images"]) == ("threat", "gun", 3)
    assert gun["flagged_share"] == {"share": round(gun["flagged"] / 3, 4), "count": gun["flagged"], "of": 3}
    assert r["folders"]["razor"]["scored_as"] == "blade" and r["folders"]["clutter"]["role"] == "benign"
    assert set(r["ap_image"]) == {"gun", "razor"}
    assert r["threat_recall_images"]["of"] == 5 and r["false_alarm_rate"]["of"] == 3
    assert r["folders"]["gun"]["flagged"] >= 2  # the default model finds guns in synthetic parcels
    assert r["figures"] == {"pr_curve": str(png)}
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 200 and img.std() > 10  # a drawn chart, not a blank


def test_eval_text_report_names_the_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_scans(tmp_path / "set" / "gun", ("gun",), 1, 1)
    code, out = model(capsys, "eval", str(tmp_path / "set"), "--pr-curve", str(tmp_path / "pr.png"))
    assert code == 0
    assert f"figure: pr curve -> {tmp_path / 'pr.png'}" in out
    assert "threat recall (images flagged) at operating point" in out


def test_eval_on_tip_output_in_yolo_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from simulator.tip import main as tip_main
    from tests.simulator.test_tip import write_crop

    write_crop(tmp_path / "crops" / "blade" / "b0.png", 0)
    assert tip_main(["--crops", str(tmp_path / "crops"), "--out", str(tmp_path / "tip"), "--count", "4", "--benign-share", "0.5"]) == 0
    capsys.readouterr()
    (tmp_path / "tip" / "labels" / "tip-00003.txt").write_text("0 0.5 0.5 0.1\n")
    code, out = model(capsys, "eval", str(tmp_path / "tip"), "--json")
    r = json.loads(out)
    assert code == 1 and r["mode"] == "yolo" and r["names"] == ["blade"]
    assert len(r["errors"]) == 1 and "tip-00003.txt:1:" in r["errors"][0]["error"]
    assert r["images"] == 3 and r["images_with_threats"] == 1 and r["images_without_threats"] == 2
    assert set(r["ap50"]) == {"blade"} and r["curves"][0]["positives"] == 1


def test_eval_synthetic(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = model(capsys, "eval", "--synthetic", "10", "--seed", "5", "--json")
    r = json.loads(out)
    assert code == 0 and r["mode"] == "synthetic" and r["images"] == 10
    assert r["images_with_threats"] == 5 and r["false_alarm_rate"]["of"] == 5
    assert set(r["ap50"]) == {"gun", "knife", "blade", "shuriken", "battery"}


def test_eval_needs_a_folder_or_synthetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert model(capsys, "eval")[0] == 2
    assert model(capsys, "eval", str(tmp_path / "absent"))[0] == 2


def test_bench_reports_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = model(capsys, "bench", "--count", "2", "--rounds", "2", "--threads", "1", "--json")
    r = json.loads(out)
    assert code == 0 and r["images"] == 2 and r["rounds"] == 2 and r["samples_per_figure"] == 4
    (one,) = r["results"]
    assert one["threads"] == 1 and one["ratio_p50"] > 0 and one["pipeline_ms"]["p50"] > 0
    assert one["ratio_p50"] == pytest.approx(one["pipeline_ms"]["p50"] / one["bare_ms"]["p50"], rel=0.01)
