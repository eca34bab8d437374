"""Legal holds made at the box: `station item hold|release|holds`, audited with the OS user, working while
another connection (the daemon's writer) holds the store; and the item page of a held item whose scan
retention deleted (the console's own template and item view)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from jinja2 import Environment, FileSystemLoader

from station import holds, reviews
from station.console import live, queries
from station.console.app import HERE, TOOLS
from station.console.auth import Sessions
from station.control import os_user
from station.retention import Policy, Retention
from station.store import Store
from tests.station.test_retention import Lane


def station(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "station.cli", "item", *args], capture_output=True, text=True,
                          timeout=60)


def test_hold_release_and_holds_at_the_box_are_audited_and_wait_for_the_writer(tmp_path: Path) -> None:
    lane = Lane(tmp_path)
    first, second = lane.item(age_days=1, item_id="RR123456785GB"), lane.item(age_days=1, item_id="RR123456785GB")
    other = lane.item(age_days=1, item_id="LX000000017DE")
    lane.store.close()
    where = ("--data-dir", str(tmp_path))

    writing = threading.Event()

    def daemon_writes() -> None:  # the daemon's writer in a transaction while the command runs
        with Store(tmp_path / "station.db") as writer:
            with writer.transaction():
                writing.set()
                time.sleep(0.5)

    busy = threading.Thread(target=daemon_writes)
    busy.start()
    writing.wait()
    held = station("hold", "RR123456785GB", "--reason", "case 42: police request", *where)
    busy.join()
    assert held.returncode == 0, held.stderr
    assert held.stdout.splitlines() == [f"item {first} (RR123456785GB) held", f"item {second} (RR123456785GB) held"]

    again = station("hold", str(first), *where)
    assert again.returncode == 1 and "held already" in again.stderr
    unknown = station("hold", "999", *where)
    assert unknown.returncode == 1 and "no stored item" in unknown.stderr
    assert station("release", "LX000000017DE", *where).stderr.startswith("error: LX000000017DE: no legal hold")

    listing = station("holds", "--json", *where)
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [(r["item"], r["reason"], r["held_by"]) for r in rows] == [
        (first, "case 42: police request", os_user()), (second, "case 42: police request", os_user())]

    released = station("release", str(first), *where)
    assert released.returncode == 0 and released.stdout.strip() == f"item {first} (RR123456785GB) released"
    (line,) = station("holds", *where).stdout.splitlines()
    assert line.split()[:2] == [str(second), "RR123456785GB"] and line.endswith("held  case 42: police request")
    everything = station("holds", "--all", *where).stdout
    assert "released" in everything and len(everything.splitlines()) == 2

    with Store(tmp_path / "station.db") as store:
        actions = [(r["who"], r["action"]) for r in store.db.execute("SELECT who, action FROM audit ORDER BY id")]
        assert actions == [(os_user(), f"item hold {first} (RR123456785GB): case 42: police request"),
                           (os_user(), f"item hold {second} (RR123456785GB): case 42: police request"),
                           (os_user(), f"item release {first} (RR123456785GB)")]
        assert store.verify_audit() == (3, None)
        assert other not in {r[0] for r in store.db.execute("SELECT item FROM legal_holds")}


def test_no_store_no_hold(tmp_path: Path) -> None:
    done = station("hold", "1", "--data-dir", str(tmp_path))
    assert done.returncode == 1 and "no store here" in done.stderr


def render_item(store: Store, pk: int) -> str:
    """The console's item page as its template renders it (the environment Console builds)."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
    env.globals.update(tools=TOOLS, verdicts=queries.CHOICES, override_reasons=reviews.OVERRIDE_REASONS,
                       screening_methods={})
    env.filters.update(clock=live.clock, ago=live.ago, when=live.when)
    view = reviews.item_view(store, pk)
    assert view is not None
    session = Sessions(3600, 3600).open("alice", "operator")
    return env.get_template("item.html").render(session=session, lane=None, site="S", lane_id="L", item=view,
                                                judging=False, shown_at=0.0, threat_classes=(), scan=None,
                                                notice=None, undo=None)


def test_the_item_page_of_a_pruned_item_says_when_retention_deleted_its_scan(tmp_path: Path) -> None:
    lane = Lane(tmp_path)
    pruned, held = lane.item(age_days=40, item_id="RR123456785GB"), lane.item(age_days=40)
    sha = lane.row(pruned)["image_sha256"]
    holds.hold(lane.store, str(held), by="clerk", reason="case 7")
    before = render_item(lane.store, pruned)
    assert f'src="/items/{pruned}/image"' in before and "deleted by retention" not in before

    Retention(lane.store, lane.images, Policy(max_share=1.0), write=lambda job: job(lane.store)).run()
    page = render_item(lane.store, pruned)
    when = live.when(lane.store.db.execute("SELECT pruned_at FROM pruned_images WHERE item = ?", (pruned,))
                     .fetchone()[0])
    assert f"image deleted by retention on {when}" in page and sha in page
    assert f'src="/items/{pruned}/image"' not in page and "no scan stored" not in page
    kept = render_item(lane.store, held)
    assert 'src="/items/' in kept and "data-legal-hold" in kept and "legal hold · clerk" in kept
    assert lane.scan_of(held) is not None and lane.scan_of(held).exists()  # type: ignore[union-attr]
    lane.store.close()
