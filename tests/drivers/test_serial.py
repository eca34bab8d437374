"""Scanner and barcode drivers against the simulated devices over real pseudo-terminals."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from drivers.barcode import BarcodeRead, BarcodeReader
from drivers.health import HealthState
from drivers.scanner import Scanner, ScannerError, ScannerRejected, ScannerTimeout
from drivers.scanner_events import Interlock, ScanDone, ScannerFault, ScanStarted, TubeStatus
from drivers.scanner_protocol import Frame, encode
from drivers.serial_port import SerialLinkDown, SerialPort
from simulator.serial_devices import SimBarcode, SimScanner

SHA = "ab" * 32
FAST = (0.01, 0.05)  # reconnect backoff for tests


def run(main: Callable[[], Coroutine[Any, Any, None]], timeout: float = 10.0) -> None:
    """Run one test body; fail it if it leaks tasks, threads or file descriptors."""
    fds = set(os.listdir("/proc/self/fd"))
    threads = threading.active_count()

    async def body() -> None:
        await asyncio.wait_for(main(), timeout)
        leaked = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leaked, f"leaked tasks: {leaked}"

    asyncio.run(body())
    assert threading.active_count() == threads
    assert set(os.listdir("/proc/self/fd")) <= fds, "leaked file descriptors"


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, polling, or fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def take(stream: Any, n: int) -> list[Any]:
    out = []
    async for item in stream:
        out.append(item)
        if len(out) == n:
            break
    return out


def test_handshake_identifies_the_scanner() -> None:
    async def main() -> None:
        async with SimScanner(model="XR-9", serial="A17") as sim, Scanner(sim.path) as scanner:
            await eventually(lambda: scanner.ready)
            assert sim.commands[0].type == "HELLO"
            assert sim.commands[0].fields["proto"] == "1"
            assert scanner.identity["model"] == "XR-9"
            health = scanner.health
            assert health.state is HealthState.UP
            assert "XR-9" in health.detail and "A17" in health.detail
            reply = await scanner.command("STATUS")
            assert reply.fields["tube"] == "ready"
            assert reply.fields["interlock"] == "closed"

    run(main)


def test_replies_are_matched_by_seq_not_by_order() -> None:
    async def main() -> None:
        async with SimScanner() as sim, Scanner(sim.path) as scanner:
            await eventually(lambda: scanner.ready)
            sim.respond = False
            first = asyncio.create_task(scanner.command("TUBE"))
            second = asyncio.create_task(scanner.command("SELFTEST"))
            await eventually(lambda: len(sim.commands) == 3)
            tube_cmd, selftest_cmd = sim.commands[1], sim.commands[2]
            # Answer in reverse order.
            await sim.send_raw(encode(Frame("OK", selftest_cmd.seq, {"result": "pass"})))
            await sim.send_raw(encode(Frame("OK", tube_cmd.seq, {"state": "ready"})))
            assert (await first).fields == {"state": "ready"}
            assert (await second).fields == {"result": "pass"}

    run(main)


def test_err_reply_raises_rejected_with_code() -> None:
    async def main() -> None:
        async with SimScanner() as sim, Scanner(sim.path) as scanner:
            await eventually(lambda: scanner.ready)
            assert (await scanner.command("ARM", item="T1")).fields["armed"] == "1"
            await sim.interlock(open=True)
            with pytest.raises(ScannerRejected) as info:
                await scanner.command("ARM")
            assert info.value.code == "INTERLOCK_OPEN"
            with pytest.raises(ScannerRejected) as info:
                await scanner.command("FLY")
            assert info.value.code == "UNKNOWN_COMMAND"
            events = await take(scanner.events(), 1)
            assert isinstance(events[0], Interlock) and events[0].open

    run(main)


def test_silent_scanner_times_out_and_late_reply_is_counted_stale() -> None:
    async def main() -> None:
        async with SimScanner() as sim, Scanner(sim.path) as scanner:
            await eventually(lambda: scanner.ready)
            sim.respond = False
            with pytest.raises(ScannerTimeout):
                await scanner.command("STATUS", timeout=0.1)
            assert scanner.stats.timeouts == 1
            await sim.send_raw(encode(Frame("OK", sim.commands[-1].seq)))
            await eventually(lambda: scanner.stats.stale_replies == 1)

    run(main)


def test_events_arrive_in_order_through_noise_and_split_writes() -> None:
    async def main() -> None:
        sim = SimScanner(noise_bytes_per_frame=7, split_writes=True, seed=3)
        async with sim, Scanner(sim.path) as scanner:
            await eventually(lambda: scanner.ready)
            for i in range(20):
                await sim.scan_started(f"S{i}")
                await sim.scan_done(f"S{i}", f"2026/11/28/S{i}.xrd", SHA)
            await sim.fault("HV_ARC", "arc, tube 1")
            events = await take(scanner.events(), 41)
            expected: list[Any] = []
            for i in range(20):
                expected += [("start", f"S{i}"), ("done", f"S{i}", f"2026/11/28/S{i}.xrd")]
            got = [
                ("start", e.scan_id) if isinstance(e, ScanStarted) else ("done", e.scan_id, e.file)
                for e in events[:40]
            ]
            assert got == expected
            assert all(e.sha256 == SHA for e in events[1:40:2])
            assert events[40] == ScannerFault("HV_ARC", "arc, tube 1", events[40].t)
            stats = scanner.stats
            assert stats.frames_ok >= 42  # HELLO reply + 41 events
            assert sum(stats.frame_errors.values()) > 0
            assert scanner.health.state is HealthState.DEGRADED

    run(main)


def test_xray_switch_reports_tube_states() -> None:
    async def main() -> None:
        async with SimScanner(warmup_s=0.01) as sim, Scanner(sim.path) as scanner:
            await eventually(lambda: scanner.ready)
            await scanner.command("XRAY", on=False)
            with pytest.raises(ScannerRejected) as info:
                await scanner.command("ARM")
            assert info.value.code == "NOT_READY"
            await scanner.command("XRAY", on=True)
            events = await take(scanner.events(), 3)
            assert [(e.state, e.kv) for e in events if isinstance(e, TubeStatus)] == [
                ("off", 0.0), ("warming", 0.0), ("ready", 160.0)
            ]
            assert (await scanner.command("ARM")).fields["armed"] == "1"

    run(main)


def test_invalid_event_is_counted_and_dropped() -> None:
    async def main() -> None:
        async with SimScanner() as sim, Scanner(sim.path) as scanner:
            await eventually(lambda: scanner.ready)
            escape = {"scan": "S1", "file": "../../etc/passwd", "sha256": SHA}
            await sim.send_raw(encode(Frame("SCAN_DONE", 90, escape)))
            await sim.send_raw(encode(Frame("NEW_EVENT", 91, {"x": "1"})))  # unknown: ignored
            await sim.scan_done("S1", "S1.xrd", SHA)
            [event] = await take(scanner.events(), 1)
            assert isinstance(event, ScanDone) and event.file == "S1.xrd"
            assert scanner.stats.frame_errors == {"invalid": 1}
            assert scanner.stats.unknown_frames == 1

    run(main)


def test_event_overflow_drops_oldest_and_counts() -> None:
    async def main() -> None:
        async with SimScanner() as sim, Scanner(sim.path, event_queue_size=5) as scanner:
            await eventually(lambda: scanner.ready)
            for i in range(8):
                await sim.scan_started(f"S{i}")
            await eventually(lambda: scanner.stats.frames_ok == 9)
            events = await take(scanner.events(), 5)
            assert [e.scan_id for e in events] == ["S3", "S4", "S5", "S6", "S7"]
            assert scanner.stats.events_dropped == 3
            assert scanner.health.errors["events_dropped"] == 3

    run(main)


def test_protocol_version_mismatch_reports_down() -> None:
    async def main() -> None:
        async with SimScanner(proto=2) as sim, Scanner(sim.path) as scanner:
            await eventually(lambda: scanner.health.state is HealthState.DOWN)
            assert "proto=2" in scanner.health.detail
            with pytest.raises(ScannerError):
                await scanner.command("STATUS")
            assert [c.type for c in sim.commands] == ["HELLO"]

    run(main)


def test_unplug_goes_down_and_replug_reconnects(tmp_path: Path) -> None:
    """Unplug = close the sim (its pty master); replug = a new sim on the same by-id style link."""
    link = tmp_path / "scanner"

    async def main() -> None:
        async with SimScanner(link=link) as first:
            scanner = Scanner(str(link), reconnect_backoff=FAST)
            await scanner.__aenter__()
            try:
                await eventually(lambda: scanner.ready)
                await first.scan_started("before")
                assert (await take(scanner.events(), 1))[0].scan_id == "before"
                await first.__aexit__(None, None, None)
                await eventually(lambda: scanner.health.state is HealthState.DOWN)
                assert not scanner.ready
                with pytest.raises(ScannerError):
                    await scanner.command("STATUS")
                async with SimScanner(link=link, serial="SECOND") as second:
                    await eventually(lambda: scanner.ready)
                    assert scanner.identity["serial"] == "SECOND"
                    assert second.commands[0].type == "HELLO"
                    assert (await scanner.command("STATUS")).fields["tube"] == "ready"
                    await second.scan_started("after")
                    assert (await take(scanner.events(), 1))[0].scan_id == "after"
                    health = scanner.health
                    assert health.state is HealthState.UP
                    assert health.errors["lost"] == 1
            finally:
                await scanner.__aexit__(None, None, None)
        assert not link.exists()

    run(main)


def test_port_is_exclusive_and_write_fails_fast_when_down(tmp_path: Path) -> None:
    async def main() -> None:
        async with SimScanner() as sim, SerialPort(sim.path, reconnect_backoff=FAST) as port:
            assert port.is_open
            async with SerialPort(sim.path, reconnect_backoff=FAST) as intruder:
                assert not intruder.is_open
                assert intruder.health.state is HealthState.DOWN
                assert "lock" in intruder.health.detail
                with pytest.raises(SerialLinkDown):
                    await intruder.write(b"x")

    run(main)


def test_barcode_codes_noreads_and_garbage() -> None:
    async def main() -> None:
        async with SimBarcode(split_writes=True, seed=1) as sim, BarcodeReader(sim.path) as reader:
            await sim.send("RR123456785GB")
            await sim.send(None)
            await sim.send_raw(b"  EE000000000CH \n\r\n\r")  # blanks stripped, empty lines ignored
            await sim.send_raw(b"\x00\xfe\x13\r\n")  # line noise
            await sim.send("CP987654321DE")
            reads = await take(reader.reads(), 4)
            assert [r.code for r in reads] == ["RR123456785GB", None, "EE000000000CH", "CP987654321DE"]
            assert all(isinstance(r, BarcodeRead) for r in reads)
            stats = reader.stats
            assert (stats.reads, stats.no_reads, stats.errors) == (3, 1, {"garbage": 1})
            assert reader.health.state is HealthState.DEGRADED

    run(main)


def test_barcode_reader_down_when_unplugged() -> None:
    async def main() -> None:
        sim = SimBarcode()
        async with sim:
            reader = BarcodeReader(sim.path, reconnect_backoff=FAST)
            async with reader:
                await sim.send("RR123456785GB")
                [read] = await take(reader.reads(), 1)
                assert reader.health.state is HealthState.UP
                await sim.__aexit__(None, None, None)
                await eventually(lambda: reader.health.state is HealthState.DOWN)
                assert reader.health.errors.get("lost") == 1

    run(main)


def test_large_burst_arrives_intact_with_back_pressure() -> None:
    """More than the port buffers (64 KiB) while nobody reads: reading pauses, nothing is lost."""

    async def main() -> None:
        payload = bytes(range(256)) * 800  # 200 KiB
        async with SimBarcode() as sim, SerialPort(sim.path) as port:
            writer = asyncio.create_task(sim.send_raw(payload))
            await eventually(lambda: port.health.state is HealthState.UP)
            await asyncio.wait({writer}, timeout=0.2)  # let the line fill up while nobody reads
            received = bytearray()
            while len(received) < len(payload):
                received += await port.read()
            await writer
            assert bytes(received) == payload
            assert sim.dropped_bytes == 0

    run(main)
