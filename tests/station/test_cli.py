"""The `station` command as a user runs it: sim endpoints, EAD import, inspect."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from pymodbus.client import AsyncModbusTcpClient

from tests.conftest import free_port


def station(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_sim_prints_its_endpoints_and_serves_modbus(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "sim", "--plc-port", str(port),
                             "--data-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        endpoints = json.loads(proc.stdout.readline())
        assert endpoints["plc"] == {"host": "127.0.0.1", "port": port}
        assert os.path.exists(endpoints["scanner"]) and os.path.exists(endpoints["barcode"])
        assert Path(endpoints["spool_dir"]).is_dir()

        async def read_fault_code() -> list[int]:
            client = AsyncModbusTcpClient("127.0.0.1", port=port)
            await client.connect()
            try:
                reply = await client.read_input_registers(0, count=4, device_id=1)
                return list(reply.registers)
            finally:
                client.close()

        registers = asyncio.run(read_fault_code())
        assert len(registers) == 4  # encoder (2 words), belt speed, fault code
    finally:
        # SIGTERM, as a service manager stops it (SIGINT may be ignored in a background CI job).
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]


def write_images(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    grey8 = rng.integers(0, 255, (120, 160), dtype=np.uint8)
    files = {
        "grey8.png": grey8, "grey16.png": (grey8.astype(np.uint16) * 257), "colour.jpg": np.dstack([grey8] * 3),
        "grey16.tif": (grey8.astype(np.uint16) * 257), "colour.tif": np.dstack([grey8] * 3),
    }
    paths = {}
    for name, image in files.items():
        paths[name] = folder / name
        assert cv2.imwrite(str(paths[name]), image)
    (folder / "truncated.png").write_bytes(paths["grey8.png"].read_bytes()[:100])
    (folder / "empty.jpg").write_bytes(b"")
    return paths


def test_inspect_reports_each_image_and_carries_on_after_a_bad_one(tmp_path: Path) -> None:
    write_images(tmp_path)
    done = station("inspect", "--json", str(tmp_path))
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    by_name = {Path(line["path"]).name: line for line in lines}
    assert set(by_name) == {"grey8.png", "grey16.png", "colour.jpg", "grey16.tif", "colour.tif", "truncated.png",
                            "empty.jpg"}
    for name in ("truncated.png", "empty.jpg"):
        assert by_name[name]["error"] and name in by_name[name]["error"] and by_name[name]["flagged"] is None
    for name in ("grey8.png", "grey16.png", "colour.jpg", "grey16.tif", "colour.tif"):
        line = by_name[name]
        assert line["error"] is None and isinstance(line["flagged"], bool)
        assert set(line) == {"path", "flagged", "score", "detections", "error"}
    assert done.returncode == 1  # some files could not be read


def test_render_writes_the_operators_colour_view_with_the_detectors_boxes(tmp_path: Path) -> None:
    from drivers.xde import encode_xde
    from simulator.xray import synth_parcel

    scan = synth_parcel(np.random.default_rng(7), ("gun",))
    (tmp_path / "item.xde").write_bytes(encode_xde(scan.high, scan.low, {}))
    plain = station("render", "item.xde", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith("item-render.png  dual-energy 480 x 320")
    colour = cv2.imread(str(tmp_path / "item-render.png"))
    assert colour.shape == (320, 480, 3)
    b = scan.boxes[0]
    gun = colour[b.y1 : b.y2, b.x1 : b.x2].reshape(-1, 3).astype(int)
    metal = (gun[:, 0] - gun[:, 2] > 80) | (gun.max(1) < 40)
    assert metal.mean() > 0.1, "the gun's steel renders blue (B >> R), or black where nothing gets through"
    whole = colour.reshape(-1, 3).astype(int)
    assert (whole[:, 0] - whole[:, 2] > 80).any() and (whole[:, 2] - whole[:, 0] > 80).any(), "a colour view: blue metal and orange organics"

    boxed = station("render", "item.xde", "--detect", "-o", "boxed.png", cwd=tmp_path)
    assert boxed.returncode == 0 and "gun" in boxed.stdout, boxed.stdout + boxed.stderr
    drawn = cv2.imread(str(tmp_path / "boxed.png"))
    red = (drawn[:, :, 2] > 200) & (drawn[:, :, 1] < 40) & (drawn[:, :, 0] < 40)
    assert red.sum() > 100, "the threat's box is drawn in red"

    (tmp_path / "cut.xde").write_bytes((tmp_path / "item.xde").read_bytes()[:500])
    bad = station("render", "cut.xde", cwd=tmp_path)
    assert bad.returncode == 1 and "cut.xde" in bad.stderr and not (tmp_path / "cut-render.png").exists()
    assert station("render", "item.xde", "-o", "x.jpg", cwd=tmp_path).returncode == 2
