"""Soak: the lane fed 5 items/s for an hour with MQTT and the console open, watched from outside.

`station run --simulate` in its own process (bench/console.py's `start_lane`: seed 11, a real Mosquitto
broker, the console with its accounts), central's consumer (a paho client on `screening/v1/#`, QoS 1),
and the operator's console open in Chromium on the lane page (its event stream live), reloaded every
5 minutes as an operator moves around. Every minute: the daemon's RSS and open file descriptors
(/proc), the items stored, and the decision latency of the minute's items (from the store). At the end,
SIGTERM: the run's own summary (lost, misrouted, unsafe, judged by the simulator's ground truth) and
every stored item's result heard by central.

    .venv/bin/python -m bench.soak [--minutes 60] [--workdir DIR]

Targets (issue 17): RSS <= 300 MB and growth <= 10 %, 0 lost. Growth is measured from the sample at
WARM_MIN minutes to the last: the first minutes fill the caches that are meant to fill (the console's
rendered scans, SQLite's page cache, the allocator's arenas: 185 -> 272 MB in the first 7 minutes of a
run here, flat after), and growth that goes on after them is the leak this looks for. The JSON keeps
every sample. The machine is shared: the latency figures are this box's.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.console import RATE, first_routed, quantiles, start_lane, stop_lane, wait_for
from tests.conftest import MOSQUITTO, Broker, broker_config, free_port
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, login

SAMPLE_S = 60.0
WARM_MIN = 10.0  # the caches are full by then (see above)
RELOAD_S = 300.0


def proc_figures(pid: int) -> tuple[float, int]:
    """RSS in MB and open file descriptors of `pid`."""
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return rss_kb / 1024, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def minute_latencies(db_path: Path, since: float, until: float) -> list[float]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
        return [float(r[0]) for r in db.execute(
            "SELECT decision_latency_ms FROM items WHERE routed_at >= ? AND routed_at < ? AND "
            "decision_latency_ms IS NOT NULL", (since, until))]


class Central:
    """Central's consumer: every msg_id heard on items/result."""

    def __init__(self, port: int) -> None:
        self.results: set[str] = set()
        self.heard = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-central", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe("screening/v1/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.heard += 1
        if message.topic.endswith("/items/result"):
            self.results.add(str(json.loads(message.payload)["msg_id"]))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def soak(work: Path, minutes: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    port = free_port()
    (work / "broker.conf").write_text(broker_config(port, work))
    broker = Broker("127.0.0.1", port, None, work / "broker.conf")
    broker.start()
    central = Central(port)
    samples: list[dict[str, Any]] = []
    try:
        run = start_lane(work / "lane", broker, web=True)
        wait_for(run, "the first item stored", lambda: first_routed(run), timeout=120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = login(browser, run.station(broker), "alice", 1366, 768)
            started = last_sample = last_reload = time.time()
            while time.time() - started < minutes * 60:
                run.keep_running()
                if run.process.poll() is not None:
                    raise SystemExit(f"the station ended ({run.process.returncode}):\n{run.log_tail()}")
                now = time.time()
                if now - last_reload >= RELOAD_S:
                    page.reload()
                    last_reload = now
                if now - last_sample >= SAMPLE_S:
                    rss, fds = proc_figures(run.process.pid)
                    latency = quantiles(minute_latencies(run.db_path, last_sample, now))
                    samples.append({"minute": round((now - started) / 60, 1), "rss_mb": round(rss, 1), "fds": fds,
                                    "latency_ms": latency, "heard": central.heard})
                    print(f"[{time.strftime('%H:%M:%S')}] {samples[-1]}", flush=True)
                    last_sample = now
                page.wait_for_timeout(1000)  # the page's own event loop runs meanwhile
            browser.close()
        summary = stop_lane(run)
        with sqlite3.connect(f"file:{run.db_path}?mode=ro", uri=True) as db:
            stored = {f"{uid}/result" for (uid,) in db.execute("SELECT uid FROM items")}
            waiting = {str(m) for (m,) in db.execute("SELECT msg_id FROM outbox")}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (stored - waiting) <= central.results:
            time.sleep(0.1)
    finally:
        central.close()
        broker.stop()
    first = next((x for x in samples if x["minute"] >= WARM_MIN), samples[0])
    last = samples[-1]
    return {"bench": "soak", "minutes": minutes, "rate_per_s": RATE, "samples": samples,
            "rss_mb": {"first_minute": samples[0]["rss_mb"], "start": first["rss_mb"], "end": last["rss_mb"],
                       "growth_pct": round(100 * (last["rss_mb"] / first["rss_mb"] - 1), 1)},
            "fds": {"start": first["fds"], "end": last["fds"]},
            "latency_p99_ms": {"start": first["latency_ms"].get("p99"), "end": last["latency_ms"].get("p99")},
            "items": summary.get("items"), "lost": summary.get("lost"), "misrouted": summary.get("misrouted"),
            "unsafe": summary.get("of_which_unsafe"), "results_not_heard": len((stored - waiting) - central.results),
            "outbox_left": len(waiting), "resets": len(run.resets)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if MOSQUITTO is None or CHROMIUM is None:
        raise SystemExit("needs Mosquitto and /usr/bin/chromium")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    result = soak(work, args.minutes)
    ok = (result["rss_mb"]["end"] <= 300 and result["rss_mb"]["growth_pct"] <= 10 and result["lost"] == 0
          and result["results_not_heard"] == 0)
    print(f"RSS {result['rss_mb']['start']} -> {result['rss_mb']['end']} MB ({result['rss_mb']['growth_pct']:+} %), "
          f"fds {result['fds']['start']} -> {result['fds']['end']}, decision p99 {result['latency_p99_ms']['start']} "
          f"-> {result['latency_p99_ms']['end']} ms, items {result['items']}, lost {result['lost']}, misrouted "
          f"{result['misrouted']}, results not heard {result['results_not_heard']}: {'PASS' if ok else 'FAIL'}")
    print(json.dumps({**result, "ok": ok}))


if __name__ == "__main__":
    main()
