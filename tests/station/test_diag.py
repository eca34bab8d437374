"""`station diag` end to end: the real CLI in a subprocess against simulated hardware.

The simulated PLC, scanner and barcode reader run on an event loop of their own, on a thread the
test starts and joins; the CLI talks to them over loopback TCP and real pseudo-terminals.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.belt import Belt
from simulator.plc import SimPlc
from simulator.serial_devices import SimBarcode, SimScanner
from tests.conftest import free_port

T = TypeVar("T")
CLI_TIMEOUT = 60  # a hung CLI fails the test instead of hanging the run


class SimThread:
    """Simulated lane hardware served by its own event loop on its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="diag-test sim", daemon=True)
        self.stack = AsyncExitStack()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def start(self) -> None:
        self.thread.start()

        async def enter() -> None:
            self.plc = await self.stack.enter_async_context(SimPlc(Belt(), port=0))
            self.scanner = await self.stack.enter_async_context(SimScanner(seed=7))
            self.barcode = await self.stack.enter_async_context(SimBarcode())

        self.call(enter())

    def close(self) -> None:
        try:
            self.call(self.stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    def set_and_scan(self, change: Callable[[], None]) -> None:
        """Apply `change` on the sim's loop and run one PLC scan, so the Modbus server shows it now."""

        async def apply() -> None:
            change()
            await self.plc.scan(self.loop.time(), 0.0)

        self.call(apply())


@pytest.fixture
def sim() -> Iterator[SimThread]:
    lane = SimThread()
    lane.start()
    yield lane
    lane.close()


def write_config(path: Path, *, plc_port: int, scanner: str, barcode: str) -> Path:
    path.write_text(
        f'[plc]\ntimeout_s = 0.5\n[plc.link]\ntype = "tcp"\nhost = "127.0.0.1"\nport = {plc_port}\n'
        f'[scanner]\nport = "{scanner}"\n[barcode]\nport = "{barcode}"\n[storage]\ndata_dir = "var"\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def config(sim: SimThread, tmp_path: Path) -> Path:
    return write_config(tmp_path / "station.toml", plc_port=sim.plc.port, scanner=sim.scanner.path,
                        barcode=sim.barcode.path)


def diag(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "station.cli", "diag", *args, "-c", str(config)],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)


def rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ---- PLC ----------------------------------------------------------------------------------------


def test_plc_read_by_name_shows_the_simulators_value(sim: SimThread, config: Path) -> None:
    sim.set_and_scan(lambda: setattr(sim.plc.belt, "cleared", 70_000))  # > 16 bits: both words matter

    result = diag(config, "plc", "read", "cleared_count")

    assert result.returncode == 0, result.stderr
    assert rows(result.stdout) == [["name", "table", "address", "value", "unit"],
                                   ["cleared_count", "input", "4-5", "70000"]]


def test_plc_read_by_address_shows_raw_words(sim: SimThread, config: Path) -> None:
    sim.set_and_scan(lambda: setattr(sim.plc.belt, "cleared", 70_000))

    result = diag(config, "plc", "read", "4", "--table", "input", "--count", "2")

    assert result.returncode == 0, result.stderr
    assert rows(result.stdout)[1:] == [
        ["input", "4", "1", "0x0001", "cleared_count", "(word", "1", "of", "2)"],
        ["input", "5", "4464", "0x1170", "cleared_count", "(word", "2", "of", "2)"],  # 70000 = 1 * 65536 + 4464
    ]


def test_plc_read_over_rtu(sim: SimThread, config: Path) -> None:
    async def start_rtu_plc() -> SimPlc:
        plc = await sim.stack.enter_async_context(SimPlc(Belt(), rtu=True))
        plc.belt.inspected = 12
        await plc.scan(sim.loop.time(), 0.0)
        return plc

    rtu = sim.call(start_rtu_plc())

    # the configured link is TCP; --rtu replaces it (a pty carries no parity bit, hence --parity N)
    result = diag(config, "plc", "read", "inspected_count", "--rtu", rtu.rtu_path, "--parity", "N")

    assert result.returncode == 0, result.stderr
    assert ["inspected_count", "input", "6-7", "12"] in rows(result.stdout)


def test_plc_write_within_limits_reaches_the_plc_and_is_read_back(sim: SimThread, config: Path) -> None:
    result = diag(config, "plc", "write", "belt_speed_sp", "1500")

    assert result.returncode == 0, result.stderr
    assert "wrote belt_speed_sp = 1500 mm/s; read back:" in result.stdout
    assert ["belt_speed_sp", "holding", "0", "1500", "mm/s"] in rows(result.stdout)
    wait_for(lambda: sim.plc.belt.speed_setpoint_mm_s == 1500, "the simulated belt to take the new set-point")


@pytest.mark.parametrize(("name", "value", "why"), [
    ("belt_speed_sp", "5000", "above its max 3000 mm/s"),
    ("encoder", "5", "read-only"),
])
def test_plc_write_refused_names_the_reason(sim: SimThread, config: Path, name: str, value: str, why: str) -> None:
    result = diag(config, "plc", "write", name, value)

    assert result.returncode == 1
    assert "write refused" in result.stderr and why in result.stderr
    assert sim.plc.belt.speed_setpoint_mm_s == 0  # nothing reached the PLC


def test_plc_bad_usage_exits_2_without_touching_the_plc(config: Path) -> None:
    unknown = diag(config, "plc", "read", "belt_sped")
    bad_value = diag(config, "plc", "write", "belt_run", "maybe")

    assert unknown.returncode == 2 and "no register 'belt_sped'" in unknown.stderr
    assert "belt_speed_sp" in unknown.stderr  # lists what there is
    assert bad_value.returncode == 2 and "1/0, on/off or true/false" in bad_value.stderr


def test_plc_read_fails_with_the_reason_when_nothing_answers(config: Path) -> None:
    result = diag(config, "plc", "read", "encoder", "--port", str(free_port()))

    assert result.returncode == 1
    assert "did not answer" in result.stderr and "cannot connect" in result.stderr


def test_plc_watch_prints_every_register_once_per_poll(config: Path) -> None:
    result = diag(config, "plc", "watch", "--count", "2", "--interval", "0.05")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    heads = [line for line in lines if line.startswith("poll ")]
    assert [h.split()[1] for h in heads] == ["1", "2"]
    assert all(" UP " in h for h in heads)
    names = [row[0] for row in rows(result.stdout) if row]
    for name in ("belt_run", "entry_eye", "belt_speed_sp", "heartbeat", "encoder", "inspected_count"):
        assert names.count(name) == 2, name
    assert "\x1b[" not in result.stdout  # not a terminal: no cursor tricks in a log


# ---- serial -------------------------------------------------------------------------------------


def test_serial_sniff_shows_frames_and_counts_garbage(sim: SimThread, config: Path) -> None:
    sim.scanner.noise_bytes_per_frame = 6
    proc = subprocess.Popen(
        [sys.executable, "-m", "station.cli", "diag", "serial", "sniff", "scanner", "--frames", "3",
         "--seconds", "20", "-c", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the sniffer has the port open once it says so
        assert first.startswith(f"listening on {sim.scanner.path}"), first + proc.stderr.read()  # type: ignore[union-attr]

        async def talk() -> None:
            await sim.scanner.interlock(open=True)
            await sim.scanner.interlock(open=False)
            await sim.scanner.fault("E42", "tube arc")

        sim.call(talk())
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    frames = [line for line in out.splitlines() if "FRAME" in line]
    assert [f.split("FRAME")[1].split()[0] for f in frames] == ["INTERLOCK", "INTERLOCK", "FAULT"]
    assert "code=E42 text=tube arc" in frames[2]
    assert "ERROR  garbage" in out
    summary = dict(line.split("  ", 1) for line in out.splitlines()[-2:])
    assert summary["frames"] == "3"
    assert int(summary["errors"].split()[0].removeprefix("garbage=")) >= 1
    assert proc.returncode == 1, err  # bad bytes on the line fail the check


def test_serial_sniff_barcode_lines(sim: SimThread, config: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "station.cli", "diag", "serial", "sniff", sim.barcode.path, "--protocol",
         "barcode", "--frames", "2", "--seconds", "20", "-c", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("listening on")

        async def read_two() -> None:
            await sim.barcode.send("RR123456785DE")
            await sim.barcode.send(None)

        sim.call(read_two())
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert [line.split()[2:] for line in out.splitlines()[:2]] == [["CODE", "RR123456785DE"], ["NOREAD"]]
    assert "errors  none" in out


def test_scanner_selftest_passes(sim: SimThread, config: Path) -> None:
    result = diag(config, "scanner", "selftest")

    assert result.returncode == 0, result.stdout + result.stderr
    table = {row[0]: row[1:] for row in rows(result.stdout)[2:6]}
    assert {step: cells[0] for step, cells in table.items()} == {
        "HELLO": "PASS", "STATUS": "PASS", "SELFTEST": "PASS", "TUBE": "PASS"}
    assert "model=SIM-XR1" in table["HELLO"] and "state=ready" in table["TUBE"]
    assert "selftest passed (4/4)" in result.stdout


def test_scanner_selftest_fails_on_a_silent_scanner(sim: SimThread, config: Path) -> None:
    sim.scanner.respond = False

    result = diag(config, "scanner", "selftest", "--timeout", "0.3")

    assert result.returncode == 1
    steps = {row[0]: row[1] for row in rows(result.stdout)[2:6]}
    assert steps == {"HELLO": "FAIL", "STATUS": "SKIP", "SELFTEST": "SKIP", "TUBE": "SKIP"}
    assert "timeout: scanner" in result.stdout and "no reply to HELLO" in result.stdout
    assert "selftest FAILED (0/4)" in result.stdout


def test_ports_says_which_configured_ports_open(sim: SimThread, tmp_path: Path) -> None:
    good = write_config(tmp_path / "good.toml", plc_port=sim.plc.port, scanner=sim.scanner.path,
                        barcode=sim.barcode.path)
    missing = tmp_path / "ttyUSB9"
    bad = write_config(tmp_path / "bad.toml", plc_port=sim.plc.port, scanner=sim.scanner.path,
                       barcode=str(missing))

    ok, broken = diag(good, "ports"), diag(bad, "ports")

    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "/dev/pts/" not in ok.stdout.split("configured devices:")[0]  # ptys are not ports present
    assert ["scanner", sim.scanner.path, "yes", "yes", "ok", "@", "115200"] in rows(ok.stdout)
    assert ["barcode", sim.barcode.path, "yes", "yes", "ok", "@", "9600"] in rows(ok.stdout)
    assert broken.returncode == 1
    barcode_row = next(line for line in broken.stdout.splitlines() if line.strip().startswith("barcode"))
    assert str(missing) in barcode_row and "NO" in barcode_row and "no such device" in barcode_row


# ---- the pure parts -----------------------------------------------------------------------------

_CODE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)


@given(codes=st.lists(st.one_of(_CODE, st.none()), max_size=8), ending=st.sampled_from(["\r\n", "\n", "\r"]),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_barcode_sniffer_reports_the_same_lines_however_the_bytes_are_chunked(
        codes: list[str | None], ending: str, cuts: list[int]) -> None:
    from station.cli.diag.serial_tools import BarcodeLines

    wire = "".join(("NOREAD" if c is None else c) + ending for c in codes).encode("ascii")
    lines, out, start = BarcodeLines(), [], 0
    for cut in [*sorted(c for c in cuts if c <= len(wire)), len(wire)]:
        out += lines.feed(wire[start:cut])
        start = cut
    assert out == [("NOREAD", "") if c in (None, "NOREAD") else ("CODE", c) for c in codes]
    assert lines.errors == {}


def test_write_values_are_parsed_by_register_kind() -> None:
    from drivers.profile import load_profile
    from station.cli.diag.errors import DiagUsage
    from station.cli.diag.plc_tools import parse_value

    profile = load_profile("default")
    speed, run = profile.by_name("belt_speed_sp"), profile.by_name("belt_run")
    assert [parse_value(speed, t) for t in ("1500", "010", "0x10")] == [1500, 10, 16]
    assert [parse_value(run, t) for t in ("1", "off", "TRUE")] == [True, False, True]
    for reg, text in ((speed, "1.5"), (speed, "fast"), (run, "2")):
        with pytest.raises(DiagUsage):
            parse_value(reg, text)
