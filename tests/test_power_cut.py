"""Power cuts: the daemon killed with SIGKILL at random moments of a run, again and again (issue 17).

Each round starts `station run --simulate` on the same data folder, waits for its systemd READY (the
test listens on NOTIFY_SOCKET, as systemd would), lets it run for a random while, and kills it. After
every kill the store must pass `integrity_check`, and hold every item that was in it after the last
kill, each with its result message still in the outbox (no broker: nothing leaves it). The items the
killed run was tracking on the belt are in `on_belt`, under keys of that run; a dead run's key can
leave `on_belt` only by a later start recording its item UNCONFIRMED, so at every look the number of
UNCONFIRMED items equals the number of dead runs' keys gone from `on_belt`, and after the last, clean
run every one is gone. (The simulated belt dies with the daemon, so these items are gone from the belt
too: the real lane would send them to a screener.)
"""

from __future__ import annotations

import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

KILLS = 20


LEFT_ON_BELT = "the station stopped while the item was on the belt"  # station/lane/recorder.py's reason


def snapshot(db_path: Path) -> tuple[str, dict[str, str], set[str], set[str]]:
    """integrity_check, {uid: why it is UNCONFIRMED, or ''}, the outbox's msg_ids, the keys tracked on the belt."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        items = {uid: ("left" if routed == "UNCONFIRMED" and LEFT_ON_BELT in reasons else "")
                 for uid, routed, reasons in db.execute("SELECT uid, routed, reasons FROM items")}
        outbox = {row[0] for row in db.execute("SELECT msg_id FROM outbox")}
        on_belt = {row[0] for row in db.execute("SELECT key FROM on_belt")}
    return integrity, items, outbox, on_belt


def test_sigkill_at_random_moments_loses_nothing_and_records_the_belt_unconfirmed(tmp_path: Path) -> None:
    rng = random.Random(17)
    data = tmp_path / "var"
    config = tmp_path / "station.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n[web]\nenabled = false\n[simulator]\n'
                      'item_rate_per_s = 4.0\nthreat_share = 0.3\nseed = 11\n')
    notify = tmp_path / "notify"
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(notify))
    systemd.settimeout(60)
    db_path = data / "station.db"
    before: dict[str, str] = {}
    dead_keys: set[str] = set()  # on the belt when their run was killed
    figures = {"kills": 0, "items": 0, "lost": 0, "integrity_failures": 0, "on_belt_at_kills": 0,
               "recorded_unconfirmed": 0}

    def look(after: str) -> tuple[dict[str, str], set[str]]:
        integrity, items, outbox, on_belt = snapshot(db_path)
        figures["integrity_failures"] += integrity != "ok"
        lost = set(before) - set(items)
        figures["lost"] += len(lost)
        assert integrity == "ok", f"{after}: {integrity}"
        assert not lost, f"{after}: items gone from the store: {sorted(lost)[:5]}"
        missing = [uid for uid in items if f"{uid}/result" not in outbox]
        assert not missing, f"{after}: items without their result message: {missing[:5]}"
        unconfirmed = sum(why == "left" for why in items.values())
        recorded = dead_keys - on_belt
        assert unconfirmed == len(recorded), f"{after}: {unconfirmed} UNCONFIRMED for {len(recorded)} left on the belt"
        figures["recorded_unconfirmed"] = unconfirmed
        return items, on_belt

    try:
        for round_ in range(KILLS + 1):
            log = (tmp_path / f"station-{round_}.log").open("w")
            daemon = subprocess.Popen(
                [sys.executable, "-m", "station.cli", "run", "--simulate", "--config", str(config)],
                env={"NOTIFY_SOCKET": str(notify), "PATH": "/usr/bin:/bin"}, stdout=log, stderr=log)
            try:
                while b"READY=1" not in systemd.recv(4096):
                    pass
                if round_ == KILLS:
                    daemon.send_signal(signal.SIGTERM)  # the last run ends cleanly
                    assert daemon.wait(timeout=60) == 0
                    break
                time.sleep(rng.uniform(0.0, 4.0))  # the random moment of the power cut
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(timeout=10)
            finally:
                if daemon.poll() is None:
                    daemon.kill()
                    daemon.wait()
                log.close()
            figures["kills"] += 1
            before, on_belt = look(f"kill {round_ + 1}")
            figures["on_belt_at_kills"] += len(on_belt - dead_keys)
            dead_keys |= on_belt
        before, _ = look("the last, clean stop")
        figures["items"] = len(before)
        assert figures["recorded_unconfirmed"] == len(dead_keys), "every item left on the belt at a kill is recorded"
    finally:
        systemd.close()
    print(f"power cuts: {figures}")
    assert figures["kills"] == KILLS and figures["items"] > KILLS
