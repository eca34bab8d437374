"""`station model eval|bench|verify` as a technician runs them, on the packaged model and on
files our own generator writes."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.xde import encode_xde
from simulator.xray import synth_parcel
from station.daemon import DEFAULT_MODEL
from station.model_tools import add_model_commands

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
    assert [c["check"] for c in report["checks"]] == ["manifest", "sha256", "input", "output", "inference"]


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
    assert "pass  manifest" in out


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
