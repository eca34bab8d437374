"""The station as a systemd service: the unit file verifies, and the daemon speaks sd_notify's protocol
(READY once polled, WATCHDOG from the event loop, STOPPING at SIGTERM) to a socket the test listens on,
as systemd would. (This machine runs no systemd as PID 1, so the socket stands in for it.)"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from station.service import Notifier, notify_ready

UNIT = Path(__file__).parents[2] / "deploy" / "station.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@contextmanager
def listening(path: str) -> Iterator[socket.socket]:
    """A datagram socket at `path` ('@name': the abstract namespace), as systemd's NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + path[1:] if path.startswith("@") else path)
    sock.settimeout(10)
    try:
        yield sock
    finally:
        sock.close()


def fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


def test_the_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; .ci/run installs it)")
    # verify checks that ExecStart exists: point it at this venv's station instead of /opt/station's
    unit = tmp_path / "station.service"
    unit.write_text(UNIT.read_text().replace("/opt/station/venv/bin/station", str(Path(sys.executable).parent /
                                                                                 "station")))
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    print(f"systemd-analyze verify: rc {done.returncode} {done.stdout}{done.stderr}".strip())
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    text = UNIT.read_text()
    for setting in ("Type=notify", "WatchdogSec=", "User=station", "StateDirectory=station", "ProtectSystem=strict",
                    "NoNewPrivileges=yes", "PrivateTmp=yes", "DevicePolicy=closed", "SupplementaryGroups=dialout",
                    "Restart="):
        assert f"\n{setting}" in text, setting


@pytest.mark.parametrize("where", ["path", "abstract"])
def test_ready_status_and_stopping_reach_the_socket(tmp_path: Path, where: str) -> None:
    path = str(tmp_path / "notify") if where == "path" else f"@station-test-{time.monotonic_ns()}"
    with listening(path) as systemd:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        notifier.ready("RUNNING: 0 items")
        notifier.status("RUNNING: 0 items")  # unchanged: not sent again
        notifier.status("RUNNING: 1 items")
        notifier.stopping()
        got = [fields(systemd.recv(4096)) for _ in range(3)]
        notifier.close()
    assert got[0] == {"READY": "1", "STATUS": "RUNNING: 0 items"}
    assert got[1] == {"STATUS": "RUNNING: 1 items"}
    assert got[2]["STOPPING"] == "1"


def test_without_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_s is None
    notifier.ready("x")
    notifier.stopping()


def test_a_watchdog_meant_for_another_process_is_not_petted() -> None:
    assert Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000"}).watchdog_s == 1.0


def test_the_watchdog_is_petted_from_the_loop_so_a_hung_loop_stops_the_pets(tmp_path: Path) -> None:
    """systemd restarts the station when the pets stop: they must stop when the loop hangs."""
    path = str(tmp_path / "notify")
    with listening(path) as systemd:
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"})  # 0.3 s: a pet every 0.1 s

        async def main() -> None:
            pets = asyncio.create_task(notifier.pet_forever())
            await asyncio.sleep(0.35)
            time.sleep(0.6)  # the loop hangs
            await asyncio.sleep(0.35)
            pets.cancel()

        asyncio.run(main())
        systemd.settimeout(0)
        pets = 0
        while True:
            try:
                datagram = systemd.recv(4096)
            except BlockingIOError:
                break
            assert fields(datagram) == {"WATCHDOG": "1"}
            pets += 1
    # Read after the fact, so counted: ~4 pets before the hang and ~4 after it, none during it (from a
    # thread, 6 more would have come).
    assert 5 <= pets <= 9, pets


def test_ready_waits_for_the_plc_but_not_for_ever(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with listening(path) as systemd:
        notifier = Notifier({"NOTIFY_SOCKET": path})
        polled = {"yes": False}

        async def main() -> float:
            started = time.monotonic()
            waiting = asyncio.create_task(notify_ready(notifier, lambda: polled["yes"], lambda: "RUNNING"))
            await asyncio.sleep(0.3)
            polled["yes"] = True
            await waiting
            return time.monotonic() - started

        assert asyncio.run(main()) >= 0.3
        assert fields(systemd.recv(4096)) == {"READY": "1", "STATUS": "RUNNING"}
        asyncio.run(notify_ready(notifier, lambda: False, lambda: "STOPPED (PLC link lost)", grace_s=0.2))
        assert fields(systemd.recv(4096)) == {
            "READY": "1", "STATUS": "up, but the PLC has not answered in 0.2 s: STOPPED (PLC link lost)"}


@pytest.mark.slow
def test_the_daemon_is_ready_once_polled_pets_the_watchdog_and_says_stopping_at_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "station.toml"
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "var"}"\n[web]\nenabled = false\n'
                      '[simulator]\nitem_rate_per_s = 2.0\nseed = 3\n')
    path = str(tmp_path / "notify")
    with listening(path) as systemd:
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1500000", "PATH": "/usr/bin:/bin"}
        log = (tmp_path / "station.log").open("w")
        daemon = subprocess.Popen([sys.executable, "-m", "station.cli", "--log-level", "info", "run", "--simulate",
                                   "--config", str(config)], env=env, stdout=log, stderr=log)
        try:
            started = time.monotonic()
            while "READY" not in (first := fields(systemd.recv(4096))):
                assert first == {"WATCHDOG": "1"}, first  # pets may come before (systemd counts them from READY)
            ready_s = time.monotonic() - started
            assert not first["STATUS"].startswith("up, but"), first  # the PLC answered
            pets, statuses, last = 0, [], time.monotonic()
            while pets < 6:
                got = fields(systemd.recv(4096))
                if got.get("WATCHDOG") == "1":
                    gap, last = time.monotonic() - last, time.monotonic()
                    assert gap < 1.5, f"{gap:.2f} s between pets: systemd would have killed it"
                    pets += 1
                if "STATUS" in got:
                    statuses.append(got["STATUS"])
            daemon.send_signal(signal.SIGTERM)
            while "STOPPING" not in (got := fields(systemd.recv(4096))):
                pass
            assert daemon.wait(timeout=60) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
            log.close()
    print(f"READY after {ready_s:.1f} s ({first['STATUS']}); {pets} pets; statuses {statuses[-2:]}")
    assert any(s.startswith("RUNNING") for s in [first["STATUS"], *statuses]), statuses
