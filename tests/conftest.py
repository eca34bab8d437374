"""Shared fixtures: a real Mosquitto broker on a free port, and a guard against leaked threads."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

# Shared CI machines are noisy: a property test fails on its assertions, never on wall-clock time.
settings.register_profile("station", deadline=None, print_blob=True)
settings.load_profile("station")

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """A broker process of a test's own: Mosquitto, or another implementation given as `program`
    (started as `program -c config`, as both Mosquitto and nats-server are)."""

    host: str
    port: int
    process: subprocess.Popen[bytes] | None
    config: Path
    program: str | None = None  # None: Mosquitto

    def start(self) -> None:
        program = self.program or MOSQUITTO
        assert program is not None
        name = Path(program).name
        self.process = subprocess.Popen([program, "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {self.process.returncode}") from None
                time.sleep(0.02)
        raise RuntimeError(f"{name} did not start listening within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


def terminate(process: subprocess.Popen[str], timeout: float) -> int:
    """SIGTERM, as systemd stops a service, then its exit code (killed, and an error, if it hangs)."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def broker_config(port: int, folder: Path) -> str:
    """Persistence on, in the test's own folder: sessions and queued QoS 1 messages survive a restart.

    Run as root, mosquitto would drop to its own user and could not write there: keep it root then.
    """
    user = "user root\n" if os.geteuid() == 0 else ""
    # max_queued_messages 0: no cap on what waits for a slow consumer (Mosquitto drops QoS 1 messages
    # past 1,000 queued by default; a site's broker for central needs the same setting).
    return (f"listener {port} 127.0.0.1\nallow_anonymous true\n{user}persistence true\nmax_queued_messages 0\n"
            f"persistence_location {folder}/\nlog_dest file {folder}/mosquitto.log\n")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto broker of this test's own, on a free loopback port."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(broker_config(port, tmp_path))
    b = Broker("127.0.0.1", port, None, config)
    b.start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A test must not leave threads running (a leaked worker, serial reader or server)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 128 MiB tmpfs of this test's own (a disk that can really fill up); needs root to mount."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is simulated on a tmpfs of the test's own: mounting one needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the full-disk tests need one")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many broker messages the tests validated against the contract (tests/contract_check.py)."""
    from tests import contract_check

    total = sum(contract_check.checked.values())
    if total or contract_check.invalid:
        terminalreporter.write_line(
            f"contract: {total} broker messages validated against station/schemas "
            f"({len(contract_check.topics)} topics), {len(contract_check.invalid)} invalid")
        by_schema = ", ".join(f"{schema} {n}" for schema, n in sorted(contract_check.checked.items()))
        terminalreporter.write_line(f"  by schema: {by_schema}")
        for line in contract_check.invalid[:20]:
            terminalreporter.write_line(f"  invalid: {line[:500]}")
