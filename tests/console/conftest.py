"""A real station on its simulated lane, serving the console, with a real broker and a real browser.

One station for the whole folder (it takes seconds to start and CPU to run): the tests share it, and
each takes the items it judges from the queue, so none depends on another's.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MOSQUITTO, Broker, broker_config, free_port, terminate
from tests.contract_check import validated

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SHOTS = Path(os.environ.get("STATION_SCREENSHOTS", Path(__file__).resolve().parents[2] / "build" / "screenshots"))
USERS = {"alice": ("operator", "mint-tea-0001"), "bob": ("operator", "green-door-02"),
         "sue": ("supervisor", "blue-kite-003"), "tom": ("technician", "red-lamp-0004"),
         "carol": ("operator", "oak-river-005"), "dave": ("operator", "salt-pier-006")}


@dataclass
class Station:
    url: str
    data_dir: Path
    broker: Broker
    process: subprocess.Popen[str]
    started: str = ""  # what it printed up to the console's URL (all of it: station.log beside data_dir)

    def db(self) -> sqlite3.Connection:
        """A read connection of the test's own to the station's store."""
        db = sqlite3.connect(self.data_dir / "station.db", timeout=5)
        db.row_factory = sqlite3.Row
        return db

    def count(self, sql: str, *params: Any) -> int:
        with self.db() as db:
            return int(db.execute(sql, params).fetchone()[0])

    @contextmanager
    def client(self, user: str | None = None) -> Iterator[httpx.Client]:
        """An HTTP client, logged in as `user` when given."""
        with httpx.Client(base_url=self.url, follow_redirects=False, timeout=10) as client:
            if user is not None:
                page = client.get("/login")
                form = {"name": user, "password": USERS[user][1], "csrf": csrf_of(page.text)}
                done = client.post("/login", data=form)
                assert done.status_code == 303, done.text
            yield client


def csrf_of(html: str) -> str:
    token = re.search(r'name="csrf" value="([^"]+)"', html)
    assert token, "no CSRF token on the page"
    return token[1]


def start_station(folder: Path, broker: Broker, web: dict[str, str] | None = None, **simulator: object) -> Station:
    data = folder / "var"
    for name, (role, password) in USERS.items():
        subprocess.run([sys.executable, "-m", "station.cli", "user", "add", name, "--role", role, "--password-stdin",
                        "--data-dir", str(data)], input=password + "\n", text=True, check=True, capture_output=True)
    sim = {"item_rate_per_s": 1.0, "threat_share": 0.5, "seed": 3, **simulator}
    config = folder / "station.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{data}"\n[web]\nport = {free_port()}\n'
        + "".join(f'{k} = "{v}"\n' for k, v in (web or {}).items()) +
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
        "[simulator]\n" + "".join(f"{k} = {v}\n" for k, v in sim.items()))
    log = folder / "station.log"  # what it says, for the reader of a failed test
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "station.cli", "--log-level", "info", "run", "--simulate",
                                    "--config", str(config)], stdout=subprocess.DEVNULL, stderr=sink, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        said = log.read_text()
        if found := re.search(r"operator console: (\S+)", said):
            return Station(found[1].rstrip("/"), data, broker, process, said)
        if process.poll() is not None:
            raise RuntimeError("the station ended before serving the console:\n" + said)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the station did not print its console URL within 60 s:\n" + log.read_text())


def stop_station(station: Station) -> int:
    return terminate(station.process, timeout=30)


@contextmanager
def running_station(folder: Path, web: dict[str, str] | None = None) -> Iterator[Station]:
    """A broker of its own and a station on the simulated lane using it, both stopped afterwards."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
    port = free_port()
    (folder / "mosquitto.conf").write_text(broker_config(port, folder))
    broker = Broker("127.0.0.1", port, None, folder / "mosquitto.conf")
    broker.start()
    try:
        running = start_station(folder, broker, web)
        try:
            yield running
        finally:
            stop_station(running)
    finally:
        broker.stop()


@pytest.fixture(scope="package")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Station]:
    with running_station(tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Here the station runs in a process of its own: the only threads this process starts are the test's
    helpers and Playwright's loop executor (asyncio_N), which grows on demand and lives with the browser.
    Any other thread left running is a leak."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()
                  and not t.name.startswith("asyncio_")]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        lower_priority(("chrom", "playwright"))  # the browser and Playwright's driver
        yield chromium
        chromium.close()


def lower_priority(names: tuple[str, ...], nice: int = 10) -> None:
    """Renice this process's descendants whose command's path has one of `names`, and keep them to one CPU
    (the processes they start later inherit both).

    The operator's browser runs on a workstation, not on the lane's controller: here it shares the
    station's two cores, so it runs below the station's priority and on one core only, as if it were
    elsewhere. Niceness alone is not enough: Chromium, run as root, raises some of its own processes."""
    cpus = os.sched_getaffinity(0)
    one = {max(cpus)} if len(cpus) > 1 else cpus
    for pid in descendants(os.getpid()):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            if any(name in command for name in names):
                os.setpriority(os.PRIO_PROCESS, pid, nice)
                for task in Path(f"/proc/{pid}/task").iterdir():  # every thread: affinity is per thread
                    os.sched_setaffinity(int(task.name), one)
        except OSError:
            continue


def descendants(pid: int) -> set[int]:
    """The processes below `pid` (children, theirs, ...), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    found, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in found} - found
        found, grew = found | more, bool(more)
    return found - {pid}


def login(browser: Any, station: Station, user: str, width: int = 1920, height: int = 1080) -> Any:
    """A new browser context and page, logged in as `user`."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(station.url + "/login")
    page.fill("input[name=name]", user)
    page.fill("input[name=password]", USERS[user][1])
    page.press("input[name=password]", "Enter")
    page.wait_for_url(station.url + "/")
    return page


def shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def wait_until(what: str, condition: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


@pytest.fixture(scope="package")
def verdict_feed(station: Station, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every verdict message the broker carries, as mosquitto_sub prints them (one JSON per line)."""
    out = tmp_path_factory.mktemp("feed") / "verdicts.jsonl"
    with out.open("w") as sink:
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(station.broker.port), "-q", "1",
                                "-t", "screening/v1/+/+/items/verdict", "-v"], stdout=sink, stderr=subprocess.DEVNULL)
        try:
            yield out
        finally:
            sub.terminate()
            sub.wait(timeout=10)


def messages(feed: Path) -> list[dict[str, Any]]:
    """The messages mosquitto_sub has printed so far (`-v`: each after its topic), checked against the contract."""
    return [validated(*line.split(" ", 1)) for line in feed.read_text().splitlines() if line.strip()]


