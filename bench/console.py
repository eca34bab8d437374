"""Benchmark: the operator console on a running lane fed 5 items/s, against baselines measured in the same run.

The console runs inside the daemon, on the loop that drives the lane, so it is measured on a real station
(`station run --simulate`, its own process, a real Mosquitto broker) and judged by two things: how fast it
answers, and whether the lane notices it. Four parts:

1. HTTP, timed from httpx clients, in rounds that interleave every kind of request so that they share the
   machine's noise: the item page (a technician's: no review lock is taken), the queue page, a rendered scan
   cold (an item and view never asked before: each item's scan in the standard view and one key press of each
   image tool) and cached (the same URL again). Each kind has a connection of its own, idle before each
   request (as after an operator's click). Baselines: a GET of a static file (the HTTP stack's own cost;
   pages and the cached image are quoted against it) and a bare `cv2.imencode('.png')` of the same scan
   rendered in this process (the cold image is quoted against it). One more row: the static GET on a
   connection reused at once, as a browser fetches a page's parts.
2. The lane page in Chromium: ms from each item's decision to the moment its row is swapped into the page by
   the event stream (`window.__decisions`, console.js), and from each lane snapshot to its event
   (`window.__sse`).
3. The history search at 100,000 stored items (`seed_history`): `queries.search` for each filter and some
   combinations, in-process and as the `/history` page of a station running on a copy of that store,
   against the search without filters.
4. The lane's decision latency with the console closed (`[web] enabled = false`) and open (the browser and
   the HTTP load of part 1), the same seed for the same time, from each run's store; and the alarms that
   would mean the console starved the lane (PLC_POLL_TOO_SLOW, a FAULT).

    .venv/bin/python -m bench.console [--seconds 60] [--json] [--workdir DIR]

Targets (2 cores): image p99 <= 150 ms cold, <= 20 ms cached; decision to browser p99 <= 500 ms; search
p99 <= 200 ms; decision latency p99 open / closed <= 1.5 (a margin for the noise between two runs on a
shared box) with no PLC_POLL_TOO_SLOW and no other FAULT, start-up included (a lane that faults is reset
and started again, as an operator would, and the table says so). The simulator is fed at 5 items/s; the
belt's space decides how many it takes (the table says). Prints a table at the end (and one JSON line
with --json). The machine is shared: read the ratios, and quote medians of several runs. Needs the test extra,
Mosquitto and Debian's /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from station.accounts import add_user
from station.console.app import PAGE
from station.console.queries import HistoryFilter, search
from station.control import socket_path
from station.kernel.imaging import load_image, render_scan
from station.store import Store
from tests.conftest import MOSQUITTO, Broker, broker_config, free_port
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, USERS, Station, login
from tests.station.test_reviews import seed_history

RATE = 5.0  # items per second on the simulated lane
SEED = 11
WARM_S = 5.0  # after the first stored item: model warm-up and the first items' transients are left out
TARGET = {"image_cold_p99": 150.0, "image_cached_p99": 20.0, "decision_to_browser_p99": 500.0,
          "search_p99": 200.0, "latency_ratio_p99": 1.5}
# The standard view and one key press of each image tool (station/kernel/viewer.py TOOLS).
VIEWS = ("", "negative=1", "contrast=-1", "contrast=1", "gamma=-1", "gamma=1", "edges=1", "strip=organic",
         "strip=inorganic", "penetration=high", "penetration=low", "colour=grey", "colour=pseudo")
# The alarms of a lane core that stops the belt (station/lane/core.py `_enter_fault`): FAULT, or ESTOP.
FAULT_CODES = frozenset({"PLC_POLL_TOO_SLOW", "PLC_LINK_LOST", "PLC_FAULT", "ENCODER_JUMP", "SCANNER_INTERLOCK",
                         "JAM", "ESTOP"})
IDLE_S = 0.1  # between two requests on one connection: longer than the client's delayed ACK (40 ms)
clock = time.perf_counter


def note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def quantiles(ms: list[float]) -> dict[str, float | int]:
    s = sorted(ms)
    if not s:
        return {"n": 0, "p50": float("nan"), "p99": float("nan")}
    return {"n": len(s), "p50": round(float(np.median(s)), 3), "p99": round(s[min(len(s) - 1, int(0.99 * len(s)))], 3)}


# ---- a station on its simulated lane ---------------------------------------------------------------


@dataclass
class Run:
    """One `station run --simulate` process, its output in files (nothing can block on a pipe)."""

    folder: Path
    process: subprocess.Popen[str]
    url: str | None = None
    resets: list[float] = field(default_factory=list)  # when the bench reset the lane after a FAULT
    checked_at: float = 0.0  # the last look at its state (monotonic)

    @property
    def db_path(self) -> Path:
        return self.folder / "var" / "station.db"

    def log_tail(self) -> str:
        return (self.folder / "station.log").read_text(errors="replace")[-3000:]

    def station(self, broker: Broker) -> Station:
        assert self.url is not None
        return Station(self.url, self.folder / "var", broker, self.process)

    def command(self, action: str) -> dict[str, object]:
        """One command through the daemon's control socket, as `station lane ACTION` sends it (blocking: the
        main thread runs Playwright's loop, so `station.control.send` cannot be asyncio.run here)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(str(socket_path(self.folder / "var")))
            sock.sendall(json.dumps({"action": action}).encode() + b"\n")
            reply: dict[str, object] = json.loads(sock.makefile("rb").readline())
        return reply

    def keep_running(self) -> None:
        """As an operator would: a lane stopped by a FAULT (or an E-stop) is reset and started again. Looks
        at most once a second."""
        if time.monotonic() - self.checked_at < 1.0:
            return
        self.checked_at = time.monotonic()
        try:
            status = self.command("status")
            if status.get("state") in ("FAULT", "ESTOP"):
                note(f"the lane is in {status['state']} ({status.get('reason')}): reset and started again")
                self.command("reset")
                self.command("start")
                self.resets.append(time.time())
        except (OSError, TimeoutError, ValueError):  # not listening yet (or any more): nothing to do
            pass


def start_lane(folder: Path, broker: Broker | None, *, web: bool) -> Run:
    """The simulated lane fed RATE items/s, seed SEED; with `web`, its console (accounts: USERS)."""
    data = folder / "var"
    data.mkdir(parents=True, exist_ok=True)
    with Store(data / "station.db") as store:
        for name, (role, password) in USERS.items():
            if store.db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
                add_user(store, name, role, password, by="bench")
    mqtt = f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n' if broker else ""
    config = folder / "station.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n[web]\nenabled = {str(web).lower()}\nport = {free_port()}\n'
                      f"{mqtt}[simulator]\nitem_rate_per_s = {RATE}\nseed = {SEED}\n")
    with (folder / "station.out").open("w") as out, (folder / "station.log").open("w") as err:
        process = subprocess.Popen([sys.executable, "-m", "station.cli", "run", "--simulate", "--json", "--config",
                                    str(config), "--log-level", "info"], stdout=out, stderr=err, text=True)
    run = Run(folder, process)
    if web:
        run.url = wait_for(run, "the console's URL", lambda: _console_url(folder / "station.log"))
    return run


def _console_url(log: Path) -> str | None:
    found = re.search(r"operator console: (\S+)", log.read_text(errors="replace"))
    return found[1].rstrip("/") if found else None


def wait_for(run: Run, what: str, condition: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        run.keep_running()
        if run.process.poll() is not None:
            raise SystemExit(f"the station ended ({run.process.returncode}) before {what}:\n{run.log_tail()}")
        time.sleep(0.1)
    raise SystemExit(f"no {what} within {timeout:.0f} s:\n{run.log_tail()}")


def first_routed(run: Run) -> float | None:
    """When the run's first item was stored (routed_at, Unix seconds), None before."""
    if not run.db_path.exists():
        return None
    with closing_db(run.db_path) as db:
        try:
            value = db.execute("SELECT min(routed_at) FROM items").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not there yet
            return None
    return None if value is None else float(value)


def stop_lane(run: Run) -> dict[str, Any]:
    """SIGTERM, then the run's summary (the JSON line `station run --json` prints)."""
    run.process.send_signal(signal.SIGTERM)
    try:
        run.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        run.process.kill()
        raise SystemExit(f"the station did not stop within 60 s of SIGTERM:\n{run.log_tail()}") from None
    lines = (run.folder / "station.out").read_text().strip().splitlines()
    if not lines:
        raise SystemExit(f"the station printed no summary ({run.process.returncode}):\n{run.log_tail()}")
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


@contextmanager
def closing_db(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path, timeout=10)
    try:
        yield db
    finally:
        db.close()


def lane_figures(run: Run, t0: float, t1: float, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Decision latency of the items stored in [t0, t1), and what would mean the lane was starved."""
    with closing_db(run.db_path) as db:
        latency = [r[0] for r in db.execute("SELECT decision_latency_ms FROM items WHERE routed_at >= ? AND"
                                            " routed_at < ? AND decision_latency_ms IS NOT NULL", (t0, t1))]
        items = db.execute("SELECT count(*) FROM items WHERE routed_at >= ? AND routed_at < ?", (t0, t1)).fetchone()[0]
        late = db.execute("SELECT count(*) FROM item_reasons r JOIN items i ON i.id = r.item WHERE r.code ="
                          " 'DECISION_LATE' AND i.routed_at >= ? AND i.routed_at < ?", (t0, t1)).fetchone()[0]
        before = dict(db.execute("SELECT code, count(*) FROM alarms WHERE at < ? GROUP BY code", (t0,)).fetchall())
        during = dict(db.execute("SELECT code, count(*) FROM alarms WHERE at >= ? AND at < ? GROUP BY code",
                                 (t0, t1)).fetchall())
    return {"items": items, "items_per_s": round(items / (t1 - t0), 2), "decision_latency_ms": quantiles(latency),
            "decision_late": late, "plc_poll_too_slow": during.get("PLC_POLL_TOO_SLOW", 0),
            "faults": sum(n for code, n in during.items() if code in FAULT_CODES), "alarms": during,
            "alarms_before": before, "resets": len(run.resets), "end_state": (summary.get("lane") or {}).get("state"),
            "loop_stall_ms": summary.get("loop_stall_ms")}


# ---- part 1: the HTTP load ---------------------------------------------------------------------------


class StoredItems:
    """The ids (and scans) of the run's stored items, read from its store as they appear."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.all: list[int] = []
        self.scans: list[tuple[int, str]] = []

    def refresh(self) -> None:
        with closing_db(self.db_path) as db:
            self.all = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
            self.scans = [(r[0], r[1]) for r in db.execute("SELECT id, image_path FROM items WHERE image_path"
                                                           " IS NOT NULL ORDER BY id")]

    def scan(self, k: int) -> tuple[int, str]:
        """The k-th stored item with a scan, waiting for it to be stored."""
        deadline = time.monotonic() + 30
        while k >= len(self.scans):
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {k + 1} items with a scan stored after 30 s")
            time.sleep(0.1)
            self.refresh()
        return self.scans[k]


# Each kind of request has a connection of its own, used once a round, so every request finds its
# connection idle, as an operator's click does; "reused" asks twice at once on one connection, as a
# browser fetches a page's parts, and times the second. (Reused at once, a connection whose server does
# not set TCP_NODELAY waits for the client's delayed ACK, about 40 ms, before the response's body.)
CLIENTS = {"static": "alice", "reused": "alice", "item_page": "tom", "image_cold": "alice", "image_cached": "alice",
           "queue_page": "alice"}


@dataclass
class Load:
    """The HTTP load of part 1, on a thread of its own; samples in ms."""

    station: Station
    rounds: int
    slot_s: float
    go: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    samples: dict[str, list[float]] = field(default_factory=dict)
    error: BaseException | None = None
    rendered: dict[str, np.ndarray] = field(default_factory=dict)  # each scan as the console draws it

    def run(self) -> None:
        try:
            with ExitStack() as stack:  # one login per user (each is an argon2id hash), a connection per kind
                users = {user: stack.enter_context(self.station.client(user)) for user in sorted(set(CLIENTS.values()))}
                clients = {kind: stack.enter_context(httpx.Client(
                    base_url=self.station.url, cookies=users[user].cookies, follow_redirects=False, timeout=10))
                    for kind, user in CLIENTS.items()}
                items = StoredItems(self.station.data_dir / "station.db")
                items.refresh()
                self.ready.set()
                self.go.wait()
                for r in range(self.rounds):
                    self._round(r, clients, items)
        except BaseException as err:  # handed to the main thread, which raises it
            self.error = err
            self.ready.set()

    def _round(self, r: int, clients: Mapping[str, Any], items: StoredItems) -> None:
        start = clock()
        if r % 20 == 0:
            items.refresh()
        pk, stored = items.scan(r // len(VIEWS))
        image = f"/items/{pk}/image" + (f"?{VIEWS[r % len(VIEWS)]}" if VIEWS[r % len(VIEWS)] else "")
        steps: list[Callable[[], None]] = [
            lambda: self._get(clients["static"], "/static/console.css", "static"),
            lambda: self._reused(clients["reused"], "/static/console.css"),
            lambda: self._get(clients["item_page"], f"/items/{items.all[r % len(items.all)]}", "item_page"),
            lambda: self._image(clients, image, r % len(VIEWS) == 0),
            lambda: self._get(clients["queue_page"], "/queue", "queue_page"),
            lambda: self._encode(stored),
        ]
        for step in steps[r % len(steps):] + steps[:r % len(steps)]:
            step()
        time.sleep(max(0.0, start + self.slot_s - clock()))

    def _get(self, client: Any, url: str, name: str | None) -> None:
        t0 = clock()
        response = client.get(url)
        took = (clock() - t0) * 1e3
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:200]}")
        if name is not None:
            self.samples.setdefault(name, []).append(took)

    def _reused(self, client: Any, url: str) -> None:
        self._get(client, url, None)
        self._get(client, url, "reused")

    def _image(self, clients: Mapping[str, Any], url: str, first_view: bool) -> None:
        self._get(clients["image_cold"], url, "image_cold")
        if first_view:
            self.samples.setdefault("image_cold_first_view", []).append(self.samples["image_cold"][-1])
        self._get(clients["image_cached"], url, "image_cached")

    def _encode(self, stored: str) -> None:
        if stored not in self.rendered:  # the standard view, made once and not timed
            self.rendered[stored] = render_scan(load_image(Path(stored)))
        t0 = clock()
        ok, _ = cv2.imencode(".png", self.rendered[stored], [cv2.IMWRITE_PNG_COMPRESSION, 1])  # as the console
        self.samples.setdefault("bare_encode", []).append((clock() - t0) * 1e3)
        assert ok


# ---- parts 2 and 4: the lane with the console open, then closed ----------------------------------------


def console_run(work: Path, broker: Broker, seconds: float, rounds: int) -> dict[str, Any]:
    """The lane with Chromium on its lane page and the HTTP load running for `seconds` (at least)."""
    from playwright.sync_api import sync_playwright

    run = start_lane(work / "console-open", broker, web=True)
    try:
        station = run.station(broker)
        load = Load(station, rounds, seconds / rounds)
        worker = threading.Thread(target=load.run, name="bench-http", daemon=True)
        worker.start()
        load.ready.wait(60)  # its logins first: people do not all log in at the same moment
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = login(chromium, station, "bob")
                page.wait_for_function("window.__sse.length > 0", timeout=30_000)
                first = wait_for(run, "a stored item", lambda: first_routed(run))
                page.wait_for_timeout(max(0.0, first + WARM_S - time.time()) * 1e3)
                run.keep_running()
                page.evaluate("() => { window.__decisions = []; window.__sse = []; }")
                t0 = time.time()
                note(f"console open: measuring for {seconds:.0f} s ({rounds} HTTP rounds, Chromium on the lane page)")
                load.go.set()
                while worker.is_alive() or time.time() < t0 + seconds:
                    page.wait_for_timeout(500)  # Playwright's events are read meanwhile
                    run.keep_running()
                t1 = time.time()
                decisions = page.evaluate("window.__decisions")
                sse = page.evaluate("window.__sse")
            finally:
                chromium.close()
        if load.error is not None:
            raise load.error
    finally:
        summary = stop_lane(run)
    return {"t0": t0, "t1": t1, "offset_s": t0 - first, "http": load.samples,
            "decision_to_browser_ms": [float(d) for d in decisions],
            "snapshot_to_event_ms": [float(ms) for _, ms in sse],
            "lane": lane_figures(run, t0, t1, summary)}


def closed_run(work: Path, broker: Broker, offset_s: float, length_s: float) -> dict[str, Any]:
    """The same lane with the console off, measured over the same stretch of its item stream."""
    run = start_lane(work / "console-closed", broker, web=False)
    try:
        first = wait_for(run, "a stored item", lambda: first_routed(run))
        t0 = first + offset_s
        time.sleep(max(0.0, t0 - time.time()))
        note(f"console closed: measuring for {length_s:.0f} s")
        while time.time() < t0 + length_s:
            time.sleep(min(1.0, max(0.0, t0 + length_s - time.time())))
            run.keep_running()
        t1 = time.time()
    finally:
        summary = stop_lane(run)
    return {"t0": t0, "t1": t1, "lane": lane_figures(run, t0, t1, summary)}


# ---- part 3: the history at 100,000 items ---------------------------------------------------------------


def history_filters(store: Store) -> dict[str, dict[str, str]]:
    """The history page's query strings: none (the baseline), each filter alone, three combinations."""
    s10 = store.db.execute("SELECT item_id FROM items WHERE item_id IS NOT NULL ORDER BY id LIMIT 1 OFFSET"
                           " (SELECT count(*) / 2 FROM items)").fetchone()[0]
    first, middle = store.db.execute("SELECT min(routed_at), (SELECT routed_at FROM items ORDER BY id LIMIT 1"
                                     " OFFSET (SELECT count(*) / 2 FROM items)) FROM items").fetchone()
    day0, day1 = (datetime.fromtimestamp(at).date().isoformat() for at in (first, middle))
    return {"no filter (baseline)": {}, "s10": {"s10": s10}, "since": {"since": day1}, "until": {"until": day1},
            "decision=INSPECT": {"decision": "INSPECT"}, "reason=WEIGHT_MISMATCH": {"reason": "WEIGHT_MISMATCH"},
            "verdict=THREAT": {"verdict": "THREAT"}, "verdict=NONE (not judged)": {"verdict": "NONE"},
            "operator=alice": {"operator": "alice"},
            "INSPECT+not judged+since": {"decision": "INSPECT", "verdict": "NONE", "since": day0},
            "WEIGHT_MISMATCH+bob": {"reason": "WEIGHT_MISMATCH", "operator": "bob"},
            "PLC_FAULT+FALSE_ALARM+chen": {"reason": "PLC_FAULT", "verdict": "FALSE_ALARM", "operator": "chen"}}


def rotated(names: list[str], r: int) -> list[str]:
    return names[r % len(names):] + names[:r % len(names)]


def history_search(folder: Path, count: int, repeats: int) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """`queries.search` on a store of `count` seeded items, each filter `repeats` times, interleaved."""
    folder.mkdir(parents=True, exist_ok=True)
    with Store(folder / "station.db") as store:
        started = clock()
        seed_history(store, count, SEED)
        seeded_s = clock() - started
        filters = history_filters(store)
        parsed = {name: HistoryFilter.parse(q) for name, q in filters.items()}
        rows = {name: len(search(store, f, PAGE)) for name, f in parsed.items()}  # and warm the cache
        samples: dict[str, list[float]] = {name: [] for name in filters}
        for r in range(repeats):
            for name in rotated(list(filters), r):
                t0 = clock()
                search(store, parsed[name], PAGE)
                samples[name].append((clock() - t0) * 1e3)
    return {"items": count, "seeded_s": round(seeded_s, 1), "rows": rows,
            "search_ms": {name: quantiles(ms) for name, ms in samples.items()}}, filters


def history_page(work: Path, broker: Broker, seeded: Path, filters: Mapping[str, Mapping[str, str]],
                 repeats: int) -> dict[str, Any]:
    """GET /history?... on a station (lane running) whose store is a copy of the seeded one."""
    from urllib.parse import urlencode

    folder = work / "history-page"
    shutil.copytree(seeded, folder / "var")
    run = start_lane(folder, broker, web=True)
    samples: dict[str, list[float]] = {name: [] for name in [*filters, "static"]}
    try:
        with run.station(broker).client("alice") as alice:
            wait_for(run, "a stored item", lambda: first_routed(run))
            for r in range(repeats):
                for name in rotated([*filters, "static"], r):
                    url = "/static/console.css" if name == "static" else f"/history?{urlencode(filters[name])}"
                    t0 = clock()
                    response = alice.get(url)
                    samples[name].append((clock() - t0) * 1e3)
                    if response.status_code != 200:
                        raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:200]}")
                    time.sleep(IDLE_S)  # each request on an idle connection, as in part 1
    finally:
        stop_lane(run)
    return {name: quantiles(ms) for name, ms in samples.items()}


# ---- the table ---------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def http_rows(result: dict[str, Any]) -> list[str]:
    q = result["http"]
    static, encode = q["static"], q["bare_encode"]
    rows = [("static /static/console.css", "static", None, ""),
            ("static, its connection reused at once", "reused", static, ""),
            ("item page /items/{id} (tom)", "item_page", static, ""),
            ("queue page /queue (alice)", "queue_page", static, ""),
            ("image cold (new item or view)", "image_cold", encode, "image_cold_p99"),
            ("  of which an item's first view", "image_cold_first_view", encode, ""),
            ("image cached (same URL again)", "image_cached", static, "image_cached_p99"),
            ("bare cv2.imencode png", "bare_encode", None, "")]
    out = [f"{'':<38}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'×p50':>7}{'×p99':>7}  {'against':<12}target"]
    for label, key, base, target in rows:
        s = q[key]
        against = "(baseline)" if base is None else ("bare encode" if base is encode else "static GET")
        r50, r99 = (1.0, 1.0) if base is None else (ratio(s["p50"], base["p50"]), ratio(s["p99"], base["p99"]))
        goal = f"p99 <= {TARGET[target]:.0f} ms: {verdict(s['p99'] <= TARGET[target])}" if target else ""
        out.append(f"{label:<38}{s['n']:>5}{s['p50']:>9.2f}{s['p99']:>9.2f}{r50:>7.2f}{r99:>7.2f}  {against:<12}{goal}")
    if q["reused"]["p50"] > 5 * static["p50"] + 5:
        out.append(f"note: a connection reused at once waits {q['reused']['p50'] - static['p50']:.0f} ms more: the "
                   "server's sockets lack TCP_NODELAY (Nagle waits for the client's delayed ACK); every page's "
                   "parts pay it in a browser")
    return out


def table(result: dict[str, Any]) -> list[str]:
    out = [f"Console benchmark: lane fed at {RATE:g} items/s (seed {SEED}; the belt's space sets the rate it takes, "
           f"below), {result['measured_s']:.0f} s measured per lane run, {os.cpu_count()} CPUs",
           "", f"HTTP, {result['rounds']} interleaved rounds during the console-open run, a connection per kind of "
               "request (idle before each)",
           *http_rows(result)]
    d, s = result["decision_to_browser_ms"], result["snapshot_to_event_ms"]
    goal = TARGET["decision_to_browser_p99"]
    out += ["", "Lane page in Chromium (SSE)", f"{'':<34}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}",
            f"{'decision -> row in the browser':<34}{d['n']:>5}{d['p50']:>9.1f}{d['p99']:>9.1f}"
            f"   target p99 <= {goal:.0f} ms: {verdict(d['p99'] <= goal)}",
            f"{'lane snapshot -> its event':<34}{s['n']:>5}{s['p50']:>9.1f}{s['p99']:>9.1f}"]
    h = result["history"]
    page = result.get("history_page") or {}
    base = h["search_ms"]["no filter (baseline)"]
    out += ["", f"History at {h['items']:,} items (seeded in {h['seeded_s']} s): queries.search, {PAGE} rows a page, "
            f"{result['repeats']} each" + ("; and GET /history on a station on a copy" if page else ""),
            f"{'':<30}{'rows':>5}{'p50 ms':>9}{'p99 ms':>9}{'×p50':>7}{'×p99':>7}"
            + (f"{'page p50':>10}{'page p99':>10}" if page else "") + "  target"]
    for name, q in h["search_ms"].items():
        line = (f"{name:<30}{h['rows'][name]:>5}{q['p50']:>9.2f}{q['p99']:>9.2f}{ratio(q['p50'], base['p50']):>7.2f}"
                f"{ratio(q['p99'], base['p99']):>7.2f}")
        if page:
            line += f"{page[name]['p50']:>10.1f}{page[name]['p99']:>10.1f}"
        out.append(line + f"  p99 <= {TARGET['search_p99']:.0f} ms: {verdict(q['p99'] <= TARGET['search_p99'])}")
    if page:
        out.append(f"{'(static GET on that station)':<30}{'':>5}{'':>9}{'':>9}{'':>7}{'':>7}"
                   f"{page['static']['p50']:>10.1f}{page['static']['p99']:>10.1f}")
    return [*out, "", *lane_rows(result)]


def lane_rows(result: dict[str, Any]) -> list[str]:
    closed, open_ = result["closed"]["lane"], result["open"]["lane"]
    c, o = closed["decision_latency_ms"], open_["decision_latency_ms"]
    goal = TARGET["latency_ratio_p99"]
    rows = [("items stored in the window", closed["items"], open_["items"], ""),
            ("items stored per second", closed["items_per_s"], open_["items_per_s"], ""),
            ("decision latency p50 (ms)", c["p50"], o["p50"], f"{ratio(o['p50'], c['p50']):.2f}"),
            ("decision latency p99 (ms)", c["p99"], o["p99"],
             f"{ratio(o['p99'], c['p99']):.2f}   target <= {goal}: {verdict(result['latency_ok'])}"),
            ("event loop longest stall (ms)", closed["loop_stall_ms"], open_["loop_stall_ms"], ""),
            ("DECISION_LATE items", closed["decision_late"], open_["decision_late"], ""),
            ("PLC_POLL_TOO_SLOW alarms", closed["plc_poll_too_slow"], open_["plc_poll_too_slow"], ""),
            ("FAULTs (alarms that stop the belt)", closed["faults"], open_["faults"], ""),
            ("alarms raised", _alarms(closed["alarms"]), _alarms(open_["alarms"]), ""),
            ("alarms before the window", _alarms(closed["alarms_before"]), _alarms(open_["alarms_before"]),
             "(start-up: the model, logins, Chromium)"),
            ("lane reset by the bench", closed["resets"], open_["resets"], ""),
            ("lane state at the end", closed["end_state"], open_["end_state"], "")]
    out = ["Lane, console closed vs open (same seed, same stretch of the item stream)",
           f"{'':<36}{'closed':>22}{'open':>22}  open/closed"]
    return out + [f"{label:<36}{a!s:>22}{b!s:>22}  {r}" for label, a, b, r in rows]


def _alarms(alarms: Mapping[str, int]) -> str:
    return ",".join(f"{k}:{v}" for k, v in sorted(alarms.items())) or "none"


# ---- main --------------------------------------------------------------------------------------------


def bench(work: Path, seconds: float, rounds: int, history_items: int, repeats: int, page: bool) -> dict[str, Any]:
    port = free_port()
    (work / "mosquitto.conf").write_text(broker_config(port, work))
    broker = Broker("127.0.0.1", port, None, work / "mosquitto.conf")
    broker.start()
    try:
        note("console open: starting the station")
        opened = console_run(work, broker, seconds, rounds)
        note("console closed: starting the station")
        closed = closed_run(work, broker, opened["offset_s"], opened["t1"] - opened["t0"])
        note(f"history: seeding {history_items:,} items")
        history, filters = history_search(work / "history", history_items, repeats)
        shown = history_page(work, broker, work / "history", filters, repeats) if page else None
    finally:
        broker.stop()
    c, o = closed["lane"], opened["lane"]
    latency_ok = (ratio(o["decision_latency_ms"]["p99"], c["decision_latency_ms"]["p99"]) <= TARGET["latency_ratio_p99"]
                  and not any(code in FAULT_CODES for code in [*o["alarms"], *o["alarms_before"]]))
    return {"bench": "console", "python": sys.version.split()[0], "rate_per_s": RATE, "seed": SEED,
            "measured_s": round(opened["t1"] - opened["t0"], 1), "rounds": rounds, "repeats": repeats,
            "http": {name: quantiles(ms) for name, ms in opened["http"].items()},
            "decision_to_browser_ms": quantiles(opened["decision_to_browser_ms"]),
            "snapshot_to_event_ms": quantiles(opened["snapshot_to_event_ms"]),
            "history": history, "history_page": shown, "open": {"lane": o}, "closed": {"lane": c},
            "latency_ok": latency_ok, "target": TARGET}


def all_ok(result: dict[str, Any]) -> bool:
    q = result["http"]
    return (q["image_cold"]["p99"] <= TARGET["image_cold_p99"]
            and q["image_cached"]["p99"] <= TARGET["image_cached_p99"]
            and result["decision_to_browser_ms"]["p99"] <= TARGET["decision_to_browser_p99"]
            and all(s["p99"] <= TARGET["search_p99"] for s in result["history"]["search_ms"].values())
            and bool(result["latency_ok"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds per lane run (console open, closed)")
    ap.add_argument("--rounds", type=int, default=240, help="HTTP rounds (one request of each kind) while open")
    ap.add_argument("--history-items", type=int, default=100_000, help="items seeded for the history search")
    ap.add_argument("--repeats", type=int, default=20, help="timed searches (and /history pages) per filter")
    ap.add_argument("--no-history-page", action="store_true", help="skip GET /history on a station on the copy")
    ap.add_argument("--workdir", type=Path, help="keep the stores and the stations' logs here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line (the last line)")
    args = ap.parse_args(argv)
    if MOSQUITTO is None or not Path(CHROMIUM).exists():
        print(f"needs mosquitto and {CHROMIUM} (apt-get install mosquitto chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = bench(work, args.seconds, args.rounds, args.history_items, args.repeats, not args.no_history_page)
    print("\n".join(table(result)))
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    return 0 if all_ok(result) else 1


if __name__ == "__main__":
    raise SystemExit(main())
