"""A fault campaign, as an auditor runs one: `python -m bench.campaign --minutes N [--seed S]`.

`station sim` and `station run` as separate processes over the real transports (Modbus TCP, ptys, spool files);
random faults from simulator/faults.py and SIGKILLs of either process at random moments; a scripted operator
who resets and restarts the lane; then `station.summary.audit` judges every item against the simulator's ground
truth. Exit 0 only when nothing was lost, misrouted or unsafe. Every action is logged in WORKDIR/actions.log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from simulator.faults import FAULTS, SWITCHES
from station.control import send, socket_path
from station.store import Store
from station.summary import audit

OFF = {name: f"{name}=0" for name in SWITCHES} | {
    "plc-drop": "plc-restore", "estop": "estop-release", "interlock-open": "interlock-close"}
ARGS: dict[str, list[int]] = {  # arguments worth trying; a fault not named here (a new one too) gets 1
    "plc-slow": [2, 50, 700], "plc-write-lag": [50, 400, 1000], "outage-at-entry": [300, 1500],
    "encoder-jump": [50000], "encoder-wrap": [40000], "disk-full": [4096], "image-corrupt": [1, 2, 3, 4],
    "close": [1, 2], "serial-noise": [12], "serial-noise-rate": [400], "plc-exception": [4]}
# While one of these is on, a reset or start cannot hold: the operator waits until it is put right.
BLOCKING = {"estop", "interlock-open", "plc-drop", "plc-silent", "plc-exception", "plc-slow", "plc-write-lag",
            "disk-full", "scanner-unplug", "barcode-unplug"}
READER_ALARMS = {"SCANNER_DOWN", "SCANNER_SILENT", "BARCODE_DOWN", "BARCODE_SILENT"}
KILLS, STATION = ("kill-station", "kill-sim"), [sys.executable, "-m", "station.cli"]
RECORD_KEYS = ("scan_id", "barcode", "decision", "routed", "reasons", "revision")  # what a note shows of a row
TMPFS_MB, PRUNE_AGE_S, SETTLE_S, TICK_S = 1024, 60.0, 60.0, 0.1


class Campaign:
    def __init__(self, args: argparse.Namespace, work: Path, data: Path, tmpfs: bool) -> None:
        self.args, self.work, self.tmpfs, self.rng = args, work, tmpfs, random.Random(args.seed)
        self.station_data, self.sim_data, self.truth = data / "station", data / "simdata", work / "truth.jsonl"
        self.t0, self.wall0 = time.monotonic(), time.time()  # the truth's routed_at is wall-clock time
        self.journal = (work / "actions.log").open("a", encoding="utf-8")
        self.truth.touch()
        self.events: list[tuple[float, str, str]] = []  # (t, kind, what): the evidence for explanations
        self.truth_lines: dict[tuple[str, int], dict[str, Any]] = {}  # (event, index) -> the simulator's line
        self.seen: dict[tuple[str, int], float] = {}  # when each truth line appeared
        self.truth_at, self.first_item, self.sim_starts = 0, 0, 0
        self.injected, self.crashes = Counter[str](), Counter[str]()
        self.active: set[str] = set()  # switches on and not yet off
        self.queue: list[tuple[float, str, Callable[[], None]]] = []  # (due, what, action)
        self.sim: subprocess.Popen[str] | None = None
        self.station: subprocess.Popen[bytes] | None = None
        self.lane_state: str | None = None
        self.recover_at: float | None = None  # when the operator acts next
        self.polled_at = -1.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def log(self, kind: str, what: str) -> None:
        t = self.now()
        self.events.append((t, kind, what))
        self.journal.write(f"{time.strftime('%H:%M:%S')} +{t:7.2f}s {kind:<9} {what}\n")
        self.journal.flush()

    def later(self, delay: float, what: str, action: Callable[[], None]) -> None:
        self.queue.append((self.now() + delay, what, action))

    def run_due(self, everything: bool = False) -> None:
        due = sorted((q for q in self.queue if everything or q[0] <= self.now()), key=lambda q: q[0])
        self.queue = [q for q in self.queue if q not in due]
        for _, _, action in due:
            action()

    def tail_truth(self) -> None:
        """Stamp each new ground-truth line with the moment it appeared: the truth has no clock of its own."""
        with self.truth.open("rb") as f:
            f.seek(self.truth_at)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.truth_at += len(complete)
        for line in map(json.loads, complete.splitlines()):
            key = (line["event"], int(line["index"]))
            self.seen.setdefault(key, self.now())
            self.truth_lines[key] = line

    def start_sim(self) -> None:
        """A fresh simulator feeding new indexes, its EAD imported, and a station config naming its ports."""
        self.first_item = max((i for e, i in self.truth_lines if e == "placed"), default=-1) + 1
        cfg = self.work / "sim.toml"
        with socket.create_server(("127.0.0.1", 0)) as free:  # a free port for the simulated PLC
            port = free.getsockname()[1]
        cfg.write_text(toml({"simulator": {"seed": self.args.seed, "item_rate_per_s": 1.0, "threat_share": 0.2},
                             "storage": {"data_dir": str(self.sim_data)}}))
        with (self.work / "sim.log").open("ab") as log:
            self.sim = subprocess.Popen(
                [*STATION, "sim", "--config", str(cfg), "--plc-port", str(port), "--truth", str(self.truth),
                 "--first-item", str(self.first_item)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True)
        if not select.select([self.sim.stdout], [], [], 60)[0]:
            raise RuntimeError("the simulator printed no endpoints in 60 s (see sim.log)")
        ends = json.loads(self.sim.stdout.readline())  # type: ignore[union-attr]
        self.sim_starts += 1
        self.log("sim", f"started pid {self.sim.pid}, first item {self.first_item}: {json.dumps(ends)}")
        with (self.work / "ead.log").open("ab") as log:
            rc = subprocess.run([*STATION, "ead", "import", ends["ead"], "--data-dir", str(self.station_data)],
                                stdout=subprocess.DEVNULL, stderr=log).returncode
        self.log("ead", f"imported {ends['ead']}, rc {rc}")
        (self.work / "station.toml").write_text(toml({
            "plc.link": {"type": "tcp", **ends["plc"]}, "barcode": {"port": ends["barcode"]},
            "scanner": {"port": ends["scanner"], "spool_dir": ends["spool_dir"]},
            "storage": {"data_dir": str(self.station_data), "min_free_mb": 16}, "lane": {"auto_start": True}}))

    def start_station(self) -> None:
        if self.station is not None and self.station.poll() is None:
            return  # already up: a kill-sim restarted it before a pending restart came due
        with (self.work / "station.log").open("ab") as log:
            self.station = subprocess.Popen([*STATION, "run", "--config", str(self.work / "station.toml")],
                                            stdout=log, stderr=subprocess.STDOUT)
        self.log("station", f"started pid {self.station.pid}")

    def sim_say(self, line: str) -> None:
        try:
            print(line, file=self.sim.stdin, flush=True)  # type: ignore[union-attr]
        except OSError as err:
            self.log("error", f"cannot tell the simulator {line!r}: {err}")

    def kill_station(self) -> None:
        stop(self.station, "station", signal.SIGKILL)
        self.log("station", "SIGKILL (kill-station)")
        self.later(self.rng.uniform(1, 3), "restart station", self.start_station)

    def kill_sim(self, why: str = "SIGKILL (kill-sim)") -> None:
        """Its belt, its items and its switches go with it; disk-full's filler file stays on the tmpfs."""
        stop(self.sim, "sim", signal.SIGKILL)
        self.log("sim", why)
        self.queue = [q for q in self.queue if not q[1].startswith("off ") or q[1] == "off disk-full"]
        self.active &= {"disk-full"}
        stop(self.station, "station")  # its serial ports vanished: it must be restarted on the new ones
        self.log("station", "stopped (SIGTERM) for the new simulator")
        self.tail_truth()
        self.start_sim()
        self.start_station()

    def watch(self) -> None:
        """A process that died on its own is a finding: log it and bring it back."""
        restarting = any(q[1] == "restart station" for q in self.queue)
        if self.station is not None and self.station.poll() is not None and not restarting:
            self.crashes["station"] += 1
            self.log("crash", f"station exited by itself, rc {self.station.returncode} (see station.log)")
            self.later(2, "restart station", self.start_station)
        if self.sim is not None and self.sim.poll() is not None:
            self.crashes["sim"] += 1
            self.kill_sim(f"exited by itself, rc {self.sim.returncode} (see sim.log)")

    def inject_one(self) -> None:
        names = [n for n in FAULTS if n not in OFF.values() and n not in self.active
                 and (self.tmpfs or n != "disk-full")]
        if not self.args.no_kills and not any(q[1] == "restart station" for q in self.queue):
            names += KILLS
        name = self.rng.choice(names)
        self.injected[name] += 1
        if name in KILLS:
            return self.kill_station() if name == "kill-station" else self.kill_sim()
        arg = self.rng.choice(ARGS.get(name, [1]))
        self.sim_say(f"fault {name}={arg}")
        self.log("fault", f"{name}={arg}")
        if name in OFF:
            self.active.add(name)
            self.later(self.rng.uniform(2, 15), f"off {name}", lambda: self.switch_off(name))

    def switch_off(self, name: str) -> None:
        self.active.discard(name)
        self.sim_say(f"fault {OFF[name]}")
        self.log("fault", f"{OFF[name]} (off)")

    def control(self, action: str, **fields: str) -> dict[str, Any] | None:
        """`station lane ACTION`, straight to its socket: a CLI process a second would cost a core of two."""
        try:
            return asyncio.run(send(socket_path(self.station_data), action, 5.0, **fields))
        except (OSError, TimeoutError, ValueError):
            return None

    def operate(self) -> dict[str, Any] | None:
        """Reset and start a stopped lane 1-5 s after its cause is put right, as a person would."""
        status = self.control("status")
        state = status and status.get("state")
        if state != self.lane_state:  # the lane's story, for the explanations
            self.log("lane", f"{state} ({status.get('reason')})" if status else "station not answering")
            self.lane_state = state
        if state not in ("FAULT", "ESTOP", "STOPPED", "PAUSED") or self.active & BLOCKING:
            self.recover_at = None
        elif self.recover_at is None:
            self.recover_at = self.now() + self.rng.uniform(1, 5)
        elif self.now() >= self.recover_at:
            self.recover_at = None  # refused: the next poll tries again
            held = [a["code"] for a in status.get("alarms", []) if a["code"] in READER_ALARMS]
            for code in held if state == "PAUSED" else []:  # a reader lost and back: the operator clears it
                reply = self.control("alarm-clear", code=code) or {}
                self.log("operator", f"alarm clear {code}: {json.dumps({k: reply.get(k) for k in ('ok', 'error')})}")
            for action in () if state == "PAUSED" else ("reset", "start") if state != "STOPPED" else ("start",):
                reply = self.control(action) or {}
                said = {k: reply.get(k) for k in ("ok", "refused", "error", "state", "reason") if reply.get(k) is not None}
                self.log("operator", f"{action} ({state} {status.get('reason')}): {json.dumps(said)}")
        return status

    def prune(self) -> None:
        """Kept images (~0.6 MB each) would fill the tmpfs by accident: the campaign deletes old ones."""
        cutoff = time.time() - PRUNE_AGE_S
        for path in (self.station_data / "images").rglob("*.*"):
            with suppress(OSError):  # moved or pruned meanwhile
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def tick(self, seconds: float) -> dict[str, Any] | None:
        """Run the campaign's chores for `seconds`; the truth is read every TICK_S, so its stamps are close."""
        status, end = None, self.now() + seconds
        while self.now() < end:
            self.run_due()
            self.watch()
            self.tail_truth()
            if self.now() - self.polled_at >= 1.0:
                self.polled_at = self.now()
                status = self.operate()
                self.prune()
            time.sleep(max(0.0, min(TICK_S, end - self.now())))
        return status

    def run(self) -> None:
        self.start_sim()
        self.start_station()
        finish = self.now() + self.args.minutes * 60
        while self.now() < finish:
            self.tick(min(self.args.interval or self.rng.uniform(5, 20), finish - self.now()))
            if self.now() < finish:
                self.inject_one()
        self.log("end", "no more faults: every switch off, feed off")
        for name in sorted(self.active):
            self.switch_off(name)
        self.queue = [q for q in self.queue if not q[1].startswith("off ")]
        self.run_due(everything=True)  # a pending station restart
        self.sim_say("feed off")
        self.settle()
        stop(self.station, "station")
        stop(self.sim, "sim")
        self.tail_truth()

    def settle(self) -> None:
        """Until the belt is empty and the station has a record of every item that left it (or SETTLE_S)."""
        deadline = self.now() + SETTLE_S
        while self.now() < deadline:
            status = self.tick(1.0)
            if status and not status.get("on_belt") and not self.unsettled():
                return self.log("end", "belt empty, every item recorded")
        self.log("end", f"gave up after {SETTLE_S:.0f} s: items on the belt or lost: {self.unsettled()}")

    def unsettled(self) -> list[int]:
        """This simulator's items still on the belt (not in a bin, no record: a jammed one is MISSING) or lost."""
        with Store(self.station_data / "station.db") as store:
            rows = store.items()
        ids = ({r["scan_id"] for r in rows} | {r["barcode"] for r in rows}) - {None}
        on_belt = [i for (e, i), p in self.truth_lines.items()
                   if e == "placed" and ("routed", i) not in self.seen and not {p["scan_id"], p["barcode"]} & ids]
        return [i for i in on_belt + audit(rows, outcomes(self)).lost if i >= self.first_item]


def stop(proc: subprocess.Popen[Any] | None, name: str, sig: int = signal.SIGTERM) -> None:
    """Signal `proc` and wait for it; SIGKILL it after 15 s."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            print(f"{name} did not exit 15 s after signal {sig}: killed", file=sys.stderr)
            proc.kill()
            proc.wait()


def toml(sections: dict[str, dict[str, Any]]) -> str:
    """Flat TOML sections of strings, numbers and booleans: JSON spells those values as TOML does."""
    return "".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
                   for name, keys in sections.items())


def outcomes(c: Campaign) -> dict[int, SimpleNamespace]:
    """The simulator's outcomes, as `audit` reads them, from its truth lines."""
    routed = {i: line for (e, i), line in c.truth_lines.items() if e == "routed"}
    return {i: SimpleNamespace(truth=SimpleNamespace(**{k: p[k] for k in ("scan_id", "barcode", "threats")}),
                               bin=routed.get(i, {}).get("bin"), routed_at=routed.get(i, {}).get("routed_at"))
            for (e, i), p in c.truth_lines.items() if e == "placed"}


def score(c: Campaign) -> tuple[dict[str, Any], list[str]]:
    placed = {i: line for (e, i), line in c.truth_lines.items() if e == "placed"}
    routed = {i for (e, i) in c.truth_lines if e == "routed"}
    with Store(c.station_data / "station.db") as store:
        rows = store.items()
        alarms = dict(store.db.execute("SELECT code, count(*) FROM alarms GROUP BY code ORDER BY code").fetchall())
        integrity = store.db.execute("PRAGMA integrity_check").fetchone()[0]
    verdict = audit(rows, outcomes(c))
    by_id = {r["barcode"]: r for r in rows if r["barcode"]} | {r["scan_id"]: r for r in rows if r["scan_id"]}
    row_of = {i: by_id.get(p["scan_id"]) or by_id.get(p["barcode"]) for i, p in placed.items()}  # as audit joins
    unrouted = sorted(set(placed) - set(routed))  # on the belt when their simulator died, or jammed
    recorded = [i for i in unrouted if row_of[i] is not None]
    figures = {**verdict.counts(), "faults": dict(sorted(c.injected.items())), "placed": len(placed),
               "never_routed": len(unrouted), "never_routed_recorded": len(recorded),
               "never_routed_records": dict(Counter(row_of[i]["routed"] for i in recorded)),
               "simulator_starts": c.sim_starts, "crashes": dict(c.crashes), "alarms": alarms,
               "integrity_check": integrity, "disk_full": "on" if c.tmpfs else "skipped"}
    found = [("lost", verdict.lost), ("misrouted", verdict.misrouted), ("unsafe", verdict.unsafe),
             ("never routed, no record", [i for i in unrouted if i not in recorded])]
    notes = [f"{label} {i}: {explain(c, i)}; record "
             + (json.dumps({k: row_of[i][k] for k in RECORD_KEYS}) if row_of[i] else "none")
             for label, items in found for i in items]
    return figures, notes


def explain(c: Campaign, index: int) -> str:
    """What was going on as the item passed the gate (or, never there, while it was on the belt)."""
    placed, routed = c.truth_lines.get(("placed", index), {}), c.truth_lines.get(("routed", index))
    put = c.seen.get(("placed", index), 0.0)
    if routed:
        at = routed["routed_at"] - c.wall0 if "routed_at" in routed else c.seen[("routed", index)]
        where, since, until = f"reached {routed['bin']} at +{at:.1f}s", at - 15, at
    else:
        until = next((t for t, kind, _ in c.events if kind == "sim" and t > put), c.now())
        at, where, since = until, f"placed at +{put:.1f}s, never reached the gate", put - 2
    near = [f"{kind} {what[:60]} at +{t:.1f}s ({at - t:.1f}s before)" for t, kind, what in c.events
            if kind in ("fault", "operator", "station", "sim", "lane") and since <= t <= until]
    faults = (routed or placed).get("faults") or "none"
    return f"{placed.get('scan_id')}, {where}; faults on it: {faults}; meanwhile: {'; '.join(near) or '-'}"


def report(f: dict[str, Any], notes: list[str]) -> None:
    listed = {k: ", ".join(f"{n} x{v}" for n, v in f[k].items()) or "none" for k in ("faults", "alarms")}
    print(f"items reaching a bin: {f['items']} (placed {f['placed']}, simulator starts {f['simulator_starts']})")
    print(f"faults injected: {listed['faults']}")
    print(f"lost: {f['lost']}   misrouted: {f['misrouted']}   threats in the CLEAR bin: {f['threats_in_clear_bin']} "
          f"(model misses {f['of_which_model_misses']}, unsafe {f['of_which_unsafe']}; "
          f"threats {f['threats']}, caught {f['threats_caught']})")
    print(f"placed, never routed (on the belt when a simulator died, or jammed): {f['never_routed']}; "
          f"recorded by the station: {f['never_routed_recorded']} {f['never_routed_records']}")
    print(f"station alarms: {listed['alarms']}\nstore integrity_check: {f['integrity_check']}; "
          f"processes that died by themselves: {f['crashes'] or 'none'}")
    print("".join(f"  {note}\n" for note in notes) + json.dumps(f))


def mount_tmpfs(folder: Path) -> tuple[bool, str]:
    """One small filesystem for both data folders, so that `disk-full` can really fill the station's."""
    folder.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    return done.returncode == 0, f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"


def keep_store(c: Campaign) -> None:
    """A copy of the station's store in the work folder: the tmpfs, and the store on it, go at unmount."""
    if (src := c.station_data / "station.db").exists():
        with closing(sqlite3.connect(src)) as db, closing(sqlite3.connect(c.work / "station.db")) as copy:
            db.backup(copy)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.campaign", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, help="keep everything here: a new or empty folder (default: a temp dir)")
    p.add_argument("--interval", type=float, help="seconds between faults (default: random, 5-20 s)")
    p.add_argument("--no-kills", action="store_true", help="never SIGKILL the station or the simulator")
    args = p.parse_args(argv)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="campaign-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        p.error(f"{work} is not empty: a campaign needs a fresh work folder")
    tmpfs, why = mount_tmpfs(work / "data")
    print(f"work folder {work}; " + (f"data folders on a {TMPFS_MB} MiB tmpfs" if tmpfs
                                      else f"the disk-full fault is skipped: {why}"))
    print(f"the campaign prunes the station's kept images older than {PRUNE_AGE_S:.0f} s", flush=True)
    c = Campaign(args, work, work / "data", tmpfs)
    try:
        c.run()
        figures, notes = score(c)
    finally:
        stop(c.station, "station")
        stop(c.sim, "sim")
        keep_store(c)
        if tmpfs and subprocess.run(["umount", str(work / "data")]).returncode:
            print(f"could not unmount {work / 'data'}", file=sys.stderr)
    report(figures, notes)
    return 0 if figures["lost"] == figures["misrouted"] == figures["of_which_unsafe"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
