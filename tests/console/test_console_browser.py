"""The console in a real Chromium against a real station on its simulated lane, with a real broker.

What an operator and a technician would notice: items arrive without a reload, five verdicts given by
keyboard alone reach the broker, a locked item cannot be opened by a second operator, roles hold, and
the image tools answer. Screenshots of each page go to build/screenshots/ (STATION_SCREENSHOTS).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from station.kernel.detector import DEFAULT_MODEL
from tests.console.conftest import Station, login, messages, shot, wait_until
from tests.console.test_console_http import customs_says, item_id_of

pytestmark = pytest.mark.slow


def pending(station: Station) -> int:
    return station.count("SELECT count(*) FROM items i WHERE decision = 'INSPECT' AND NOT EXISTS "
                         "(SELECT 1 FROM verdicts v WHERE v.item = i.id AND v.undone_at IS NULL)")


def test_a_new_inspect_item_appears_in_the_queue_by_sse_without_a_reload(station: Station, browser: Any) -> None:
    wait_until("an item to judge", lambda: pending(station) >= 1, 60)
    page = login(browser, station, "alice")
    page.goto(station.url + "/queue")
    origin = page.evaluate("performance.timeOrigin")
    rows_before = page.locator("[data-rows] tbody tr[data-href]").count()
    page.keyboard.press("j")  # the operator's place in the list
    banner = page.locator("#queue-news .new")
    banner.wait_for(timeout=30_000)  # an INSPECT item stored after the page loaded
    assert "new" in banner.inner_text()
    assert page.evaluate("performance.timeOrigin") == origin, "the page reloaded"
    assert page.locator("[data-rows] tbody tr[data-href]").count() == rows_before, "the list moved under the operator"
    assert page.locator("[data-rows] tbody tr[aria-selected=true]").count() == 1
    shot(page, "queue-1920x1080")
    page.context.close()


def test_the_lane_page_is_live(station: Station, browser: Any) -> None:
    page = login(browser, station, "alice", 1366, 768)
    first = int(page.locator(".stamp").get_attribute("data-seq") or 0)
    wait_until("a newer lane snapshot on the page",
               lambda: int(page.locator(".stamp").get_attribute("data-seq") or 0) > first, 10)
    wait_until("a stored item on the lane page", lambda: page.locator("#last a.last").count() == 1)
    shot(page, "lane-1366x768")
    page.context.close()


def test_five_verdicts_by_keyboard_alone_reach_the_broker(station: Station, browser: Any, verdict_feed: Path) -> None:
    wait_until("six items to judge", lambda: pending(station) >= 6, 60)
    page = login(browser, station, "alice")
    page.goto(station.url + "/queue")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    given: dict[int, str] = {}
    for n in range(5):
        page.wait_for_selector("[data-verdict-form]")
        if n == 0:
            shot(page, "item-to-judge-1920x1080")
        item = int(page.locator("[data-item]").get_attribute("data-item") or 0)
        threat = page.locator("[data-verdict-form]").get_attribute("data-machine-threat") == "1"
        with page.expect_navigation():
            if threat:  # the detector saw one: confirm it, with its class (the select has the focus)
                page.keyboard.press("t")
                page.keyboard.press("Enter")
            else:  # nothing on the image: cleared, one key
                page.keyboard.press("c")
        given[item] = "THREAT" if threat else "CLEARED"
    assert len(given) == 5
    seen = wait_until("five verdicts on the broker", lambda: (m := [x for x in messages(verdict_feed)
                                                                 if x["by"] == "alice"]) and len(m) >= 5 and m)
    with station.db() as db:
        uids = {r["id"]: r["uid"] for r in db.execute(
            f"SELECT id, uid FROM items WHERE id IN ({','.join('?' * len(given))})", list(given))}
        stored = {r["item"]: r["verdict"] for r in db.execute("SELECT item, verdict FROM verdicts WHERE by = 'alice'")}
    assert {uids[i]: v for i, v in given.items()} == {m["uid"]: m["verdict"] for m in seen}
    assert stored == given
    assert station.count("SELECT count(*) FROM audit WHERE who = 'alice' AND action LIKE 'verdict %'") == 5
    page.context.close()


def test_a_second_operator_cannot_open_an_item_being_judged(station: Station, browser: Any) -> None:
    wait_until("an item to judge", lambda: pending(station) >= 1, 60)
    alice = login(browser, station, "alice")
    alice.goto(station.url + "/queue")
    alice.keyboard.press("Enter")
    alice.wait_for_selector("[data-verdict-form]")
    item = alice.locator("[data-item]").get_attribute("data-item")
    bob = login(browser, station, "bob")
    answer = bob.goto(f"{station.url}/items/{item}")
    assert answer is not None and answer.status == 423
    assert "being judged by alice" in bob.content()
    bob.goto(station.url + "/queue")
    locked = bob.locator(f"tr[data-href='/items/{item}']")
    assert "locked" in (locked.get_attribute("class") or "") and "alice" in locked.inner_text()
    alice.context.close()
    bob.context.close()


def test_an_operator_cannot_reach_the_technician_page(station: Station, browser: Any) -> None:
    alice = login(browser, station, "alice")
    assert alice.locator("nav a[href='/technician']").count() == 0
    answer = alice.goto(station.url + "/technician")
    assert answer is not None and answer.status == 403
    alice.context.close()
    tom = login(browser, station, "tom", 1366, 768)
    answer = tom.goto(station.url + "/technician")
    assert answer is not None and answer.status == 200
    assert tom.locator("#registers dt", has_text=re.compile(r"^belt_run$")).count() == 1
    tom.wait_for_selector("#frames .f-read, #frames li b", timeout=10_000)
    shot(tom, "technician-1366x768")
    assert tom.locator("nav a[href='/queue']").count() == 0, "a technician gives no verdicts"
    tom.context.close()


def test_the_item_view_and_each_image_tool(station: Station, browser: Any) -> None:
    wait_until("a judged-or-not item the detector flagged", lambda: station.count(
        "SELECT count(*) FROM items i WHERE EXISTS (SELECT 1 FROM detections d WHERE d.item = i.id AND d.threat = 1)"))
    with station.db() as db:
        item = db.execute("SELECT i.id FROM items i WHERE EXISTS (SELECT 1 FROM detections d WHERE d.item = i.id"
                          " AND d.threat = 1) ORDER BY i.id LIMIT 1").fetchone()["id"]
    for width, height in ((1920, 1080), (1366, 768)):
        page = login(browser, station, "tom", width, height)  # sees items, judges none: takes no lock
        page.goto(f"{station.url}/items/{item}")
        page.wait_for_function("document.querySelector('[data-scan]').naturalWidth > 0")
        assert page.locator("svg[data-boxes] g.threat").count() >= 1
        shot(page, f"item-boxes-{width}x{height}")
        if width == 1366:
            page.context.close()
            continue
        page.keyboard.press("b")
        assert not page.locator("svg[data-boxes]").is_visible()
        shot(page, "item-no-boxes")
        page.keyboard.press("b")
        sources = {page.locator("[data-scan]").get_attribute("src")}
        for key, name in (("n", "negative"), ("l", "contrast-up"), ("h", "gamma-up"), ("e", "edges"),
                          ("o", "organic-strip"), ("i", "inorganic-strip"), ("p", "high-penetration"),
                          ("p", "low-penetration"), ("v", "colour-grey"), ("v", "colour-pseudo")):
            page.keyboard.press("x")  # each tool from the standard view
            for _ in range(2 if name == "low-penetration" or name == "colour-pseudo" else 1):
                page.keyboard.press(key)
            src = page.locator("[data-scan]").get_attribute("src")
            assert src not in sources, f"{name}: the image did not change"
            sources.add(src)
            page.wait_for_function("document.querySelector('[data-scan]').complete && "
                                   "document.querySelector('[data-scan]').naturalWidth > 0")
            shot(page, f"item-tool-{name}")
        page.keyboard.press("x")
        page.keyboard.press("+")
        page.keyboard.press("+")
        assert page.locator("[data-zoom]").inner_text() != "fit"
        shot(page, "item-zoomed")
        page.keyboard.press("0")
        assert page.locator("[data-zoom]").inner_text() == "fit"
        page.keyboard.press("?")
        assert page.locator("#help").is_visible()
        shot(page, "help")
        page.context.close()


def test_keys_are_ignored_while_typing(station: Station, browser: Any) -> None:
    page = login(browser, station, "alice")
    page.goto(station.url + "/history")
    page.click("input[name=s10]")
    page.keyboard.type("c1t2")  # verdict and navigation keys, into the field
    assert page.url.endswith("/history")
    assert page.input_value("input[name=s10]") == "c1t2"
    page.context.close()


def test_the_technicians_writes_wait_for_maintenance_and_the_lane_comes_back(station: Station, browser: Any) -> None:
    tom = login(browser, station, "tom")
    tom.goto(station.url + "/technician")
    state = tom.locator("#lanebar .state")

    def write(name: str, value: str) -> str:
        tom.select_option("select[name=name]", name)
        tom.fill("input[name=value]", value)
        with tom.expect_navigation():
            tom.click("form[action='/technician/plc-write'] button")
        return tom.locator(".notice").inner_text()

    def lane(action: str) -> str:
        target = "/technician/scanner-selftest" if action == "scanner-selftest" else f"/lane/{action}"
        with tom.expect_navigation():
            tom.click(f"form[action='{target}'] button")
        return tom.locator(".notice").inner_text()

    refused = write("belt_speed_sp", "900")
    assert "refused while the lane is RUNNING" in refused and "maintenance" in refused
    assert "while the belt runs" in lane("scanner-selftest")
    assert "MAINTENANCE" in lane("maintenance")
    wait_until("the lane bar says MAINTENANCE", lambda: state.inner_text() == "MAINTENANCE", 10)
    assert "read back 1000" in write("belt_speed_sp", "1000")
    assert "result=pass" in lane("scanner-selftest")
    shot(tom, "technician-maintenance-1920x1080")
    assert "START_REFUSED" in lane("start")  # no start from maintenance, and the notice says so
    tom.fill("input[name=path]", str(DEFAULT_MODEL))  # the packaged model again, then back
    with tom.expect_navigation():
        tom.click("form[action='/technician/model/load'] button")
    assert "done, the lane runs parcel-threats-tiny" in tom.locator(".notice").inner_text()
    with tom.expect_navigation():
        tom.click("form[action='/technician/model/rollback'] button")
    assert "model-rollback: done" in tom.locator(".notice").inner_text()
    tom.fill("input[name=path]", "/nowhere/model")  # a wrong folder: refused, the model stays, an alarm says so
    with tom.expect_navigation():
        tom.click("form[action='/technician/model/load'] button")
    assert "/nowhere/model" in tom.locator(".notice").inner_text()
    # The alarm on the lane page, acknowledged and cleared there, live.
    tom.goto(station.url + "/")
    alarm = tom.locator("#alarms li", has_text="MODEL_LOAD_FAILED")
    alarm.locator("button", has_text="Acknowledge").click()
    tom.locator("#toast.ok").wait_for()
    wait_until("the alarm shown acknowledged", lambda: "ack tom" in alarm.inner_text(), 10)
    shot(tom, "lane-alarm-acknowledged-1920x1080")
    alarm.locator("button", has_text="Clear").click()
    wait_until("the alarm gone", lambda: alarm.count() == 0, 10)
    tom.goto(station.url + "/technician")
    lane("reset")
    lane("start")
    wait_until("the lane bar says RUNNING", lambda: state.inner_text() == "RUNNING", 15)
    rows = station.count("SELECT count(*) FROM audit WHERE who = 'tom' AND action LIKE 'diag plc write belt_speed_sp%'")
    assert rows == 2
    for action in ("alarm ack MODEL_LOAD_FAILED", "alarm clear MODEL_LOAD_FAILED", "lane maintenance", "lane reset",
                   "scanner self-test refused: lane RUNNING", f"model-load {DEFAULT_MODEL}", "model-rollback"):
        assert station.count("SELECT count(*) FROM audit WHERE who = 'tom' AND action = ?", action) == 1, action
    tom.context.close()


def test_a_held_item_shows_customs_beside_the_declaration_and_its_clear_keys_give_nothing(
        station: Station, browser: Any) -> None:
    wait_until("an item to judge", lambda: pending(station) >= 1, 60)
    page = login(browser, station, "bob")

    def opened() -> int | None:
        """The newest unjudged INSPECT item with an S10 id that no one else is judging, opened by bob."""
        with station.db() as db:
            rows = db.execute("SELECT id FROM items i WHERE decision = 'INSPECT' AND item_id IS NOT NULL AND NOT "
                              "EXISTS (SELECT 1 FROM verdicts v WHERE v.item = i.id AND v.undone_at IS NULL) "
                              "ORDER BY id DESC").fetchall()
        return next((row["id"] for row in rows if page.goto(f"{station.url}/items/{row['id']}").status == 200), None)
    pk = wait_until("an item bob may judge", opened, 60)
    customs_says(station, "LHR-DNL-9", item_id_of(station, pk), "do_not_load", text="lithium batteries declared")
    page.reload()
    box = page.locator("[data-customs]")
    assert box.is_visible() and "do not load" in box.inner_text() and "lithium batteries declared" in box.inner_text()
    assert page.locator("[data-customs-held]").is_visible()  # in the decision's head, too
    declaration = page.locator("h3", has_text="Declaration (CN 23)")
    assert box.bounding_box()["y"] < declaration.bounding_box()["y"]  # type: ignore[index]  # just above it
    assert page.locator('[data-verdict="CLEARED"]').is_disabled()
    assert page.locator('[data-verdict="FALSE_ALARM"]').is_disabled()
    assert page.locator(".methods input[name=methods]").count() == 7
    for key in ("c", "f"):  # the operator's keys for the two verdicts customs' hold refuses
        page.keyboard.press(key)
        assert page.url.endswith(f"/items/{pk}"), "a refused verdict was submitted"
        assert "customs do not load" in page.locator("[data-verdict-hint]").inner_text()
    shot(page, "item-customs-held")
    page.set_viewport_size({"width": 1366, "height": 768})  # the lane PC's smaller screen: nothing cut off
    bar = page.locator(".verdict-bar")
    assert bar.evaluate("e => e.scrollWidth <= e.clientWidth"), "the verdict bar overflows at 1366 px"
    assert all(page.locator(f'[data-verdict="{v}"]').is_visible() for v in ("THREAT", "REFERRED"))
    shot(page, "item-customs-held-1366x768")
    assert station.count("SELECT count(*) FROM verdicts WHERE item = ?", pk) == 0
    page.context.close()

