"""The `station` command as a user runs it: sim endpoints, EAD import, inspect."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
from pymodbus.client import AsyncModbusTcpClient

from station.cli.lane import status_lines
from station.control import ControlServer
from station.version import VERSION
from tests.conftest import free_port
from tests.station.test_lane_status_value import status as lane_status

EXAMPLE = Path(__file__).resolve().parents[2] / "station.example.toml"
PROJECT_VERSION = tomllib.loads((EXAMPLE.parent / "pyproject.toml").read_text())["project"]["version"]


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


# ---- the first hour at the box (issue 14) ---------------------------------------------------------

def test_items_must_be_positive_and_faults_need_the_simulated_lane(tmp_path: Path) -> None:
    zero = station("run", "--simulate", "--items", "0", "--data-dir", str(tmp_path))
    assert zero.returncode == 2 and "--items: 0 is not a positive integer" in zero.stderr
    fault = station("run", "--fault", "estop", "--data-dir", str(tmp_path))
    assert fault.returncode == 2 and "--fault needs --simulate" in fault.stderr
    assert not (tmp_path / "station.db").exists(), "a refused command touches nothing"


def test_a_run_whose_belt_cannot_start_ends_with_the_fault_in_its_summary_and_exit_1(tmp_path: Path) -> None:
    done = station("run", "--simulate", "--items", "5", "--fault", "estop", "--json", "--data-dir", str(tmp_path))
    assert done.returncode == 1, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["items"] == 0 and summary["lane"] == {"state": "STOPPED", "reason": "E-stop still pressed"}
    assert summary["ended"].startswith("the belt stood") and "E-stop" in summary["ended"]


def test_the_simulated_lane_runs_with_its_broker_down_and_the_summary_reads_as_a_table(tmp_path: Path) -> None:
    config = tmp_path / "station.toml"
    config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\n\n[storage]\ndata_dir = "data"\n')
    done = station("run", "--simulate", "--items", "3", "--config", str(config))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "not reachable" in done.stderr
    lines = dict(line.split("  ", 1) for line in done.stdout.splitlines())
    assert lines["items"].strip() == "3" and lines["misrouted"].strip() == "0"
    assert "{" not in done.stdout and "'" not in done.stdout, "a table for people, not Python reprs"
    assert lines["ended"].strip() == "all items routed"


def test_a_closed_output_pipe_ends_a_command_quietly(tmp_path: Path) -> None:
    write_images(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "inspect", "--json", str(tmp_path), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["path"]
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""


def test_version_and_a_log_level_after_the_command(tmp_path: Path) -> None:
    version = station("--version")
    # pyproject.toml's version (an editable install keeps the one it was installed with: install again)
    assert version.returncode == 0 and version.stdout == f"station {PROJECT_VERSION}\n"
    late = station("config", "check", str(EXAMPLE), "--log-level", "info")
    assert late.returncode == 0, late.stderr


def test_lane_status_names_the_software_version_of_the_daemon_that_answers(tmp_path: Path) -> None:
    runtime = SimpleNamespace(publish_status=lambda: lane_status(1))
    reply = ControlServer(runtime, models=None, path=tmp_path / "control.sock").status()  # type: ignore[arg-type]
    assert reply["software_version"] == VERSION == PROJECT_VERSION
    assert status_lines(reply)[0].endswith(f"  station {VERSION}")
    assert "station" not in status_lines({**reply, "software_version": None})[0]  # a daemon that does not say


def test_a_run_on_a_terminal_shows_progress_and_ctrl_c_prints_the_summary(tmp_path: Path) -> None:
    """stderr on a pseudo-terminal, as in a technician's shell; Ctrl-C is SIGINT."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "--simulate", "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while not re.search(rb"[1-9]\d* items  \d+\.\d/s  \d+ inspected  lane RUNNING", seen):
            assert time.monotonic() < deadline and proc.poll() is None, seen[-500:]
            if select.select([leader], [], [], 1.0)[0]:
                seen += os.read(leader, 4096)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    lines = dict(line.split("  ", 1) for line in out.splitlines())
    assert lines["ended"].strip() == "interrupted (SIGINT)" and int(lines["items"]) >= 1
    assert lines["lane"].strip() == "state STOPPED"


def test_sigterm_ends_a_run_with_its_summary_and_exit_0(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "--simulate", "--json", "--data-dir",
                             str(tmp_path), "--log-level", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    watchdog = threading.Timer(90, proc.kill)  # a station that never logs an item must not hang the suite
    watchdog.start()
    for line in proc.stderr:  # an info line per item: S10, scan, decision, reasons, latency
        if re.search(r"INFO station.lane.runtime: item \S+ scan-\d+: (CLEAR|INSPECT), routed \w+.*latency \d+ ms", line):
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    watchdog.cancel()
    assert proc.returncode == 0
    summary = json.loads(out)
    assert summary["ended"] == "interrupted (SIGTERM)" and summary["items"] >= 1 and summary["lost"] == 0
