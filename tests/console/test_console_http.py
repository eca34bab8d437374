"""The console's guard rails over HTTP, against the real station: what a careless or hostile request
gets (a 4xx that says why, nothing stored, nothing crashed), CSRF, undo's 30 s, the login rate limit
and the audit chain."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.conftest import Station, csrf_of, messages, wait_until

pytestmark = pytest.mark.slow


def an_item_to_judge(station: Station, client: httpx.Client,
                     skip: frozenset[int] = frozenset()) -> tuple[int, str, bool]:
    """(item, its page's CSRF token, whether the detector flagged a threat): the newest unjudged INSPECT item
    that no other test holds, opened (and so locked) by `client`."""
    def take() -> tuple[int, str, bool] | None:
        with station.db() as db:
            rows = db.execute("SELECT id FROM items i WHERE decision = 'INSPECT' AND NOT EXISTS (SELECT 1 FROM "
                              "verdicts v WHERE v.item = i.id AND v.undone_at IS NULL) ORDER BY id DESC").fetchall()
        for row in rows:
            if row["id"] in skip:
                continue
            page = client.get(f"/items/{row['id']}")
            if page.status_code == 200:
                return row["id"], csrf_of(page.text), 'data-machine-threat="1"' in page.text
            assert page.status_code == 423, page.text  # another test's operator holds it
        return None
    found: tuple[int, str, bool] = wait_until("an item to judge", take, 60)
    return found


def verdicts(station: Station) -> int:
    return station.count("SELECT count(*) FROM verdicts")


def test_a_post_without_the_csrf_token_is_refused_and_stores_nothing(station: Station) -> None:
    with station.client("bob") as bob:
        item, token, _ = an_item_to_judge(station, bob)
        before = verdicts(station)
        no_token = bob.post(f"/items/{item}/verdict", data={"verdict": "REFERRED"})
        wrong = bob.post(f"/items/{item}/verdict", data={"verdict": "REFERRED", "csrf": token[:-2] + "xx"})
        assert no_token.status_code == 403 and "CSRF" in no_token.text
        assert wrong.status_code == 403
        assert verdicts(station) == before
        with station.client() as anonymous:  # no session at all
            assert anonymous.post(f"/items/{item}/verdict", data={"verdict": "REFERRED"}).status_code == 401


def test_bad_input_gets_a_4xx_stores_nothing_and_crashes_nothing(station: Station) -> None:
    with station.client("bob") as bob:
        item, token, threat = an_item_to_judge(station, bob)
        before, audit_before = verdicts(station), station.count("SELECT count(*) FROM audit")
        cases = {
            "malformed verdict": bob.post(f"/items/{item}/verdict", data={"verdict": "MAYBE", "csrf": token}),
            "threat without its class": bob.post(f"/items/{item}/verdict", data={"verdict": "THREAT", "csrf": token}),
            "override without a reason": bob.post(f"/items/{item}/verdict", data={
                "verdict": "CLEARED" if threat else "THREAT", "threat_class": "gun", "csrf": token}),
            "unknown item": bob.post("/items/99999999/verdict", data={"verdict": "REFERRED", "csrf": token}),
            "unknown item page": bob.get("/items/99999999"),
            "oversized form": bob.post(f"/items/{item}/verdict", data={"verdict": "REFERRED", "csrf": token,
                                                                      "note": "x" * 200_000}),
            "note over 500 characters": bob.post(f"/items/{item}/verdict", data={
                "verdict": "REFERRED", "csrf": token, "note": "x" * 501}),
            "bad image view": bob.get(f"/items/{item}/image?contrast=99"),
            "unknown image parameter": bob.get(f"/items/{item}/image?path=../../station.db"),
            "bad image format": bob.get(f"/items/{item}/image?fmt=bmp"),
            "traversal into the data folder": bob.get("/static/../station.db"),
            "encoded traversal": bob.get("/static/%2e%2e/%2e%2e/station.db"),
            "traversal in the item path": bob.get("/items/..%2F..%2Fstation.db/image"),
            "bad history date": bob.get("/history?since=yesterday"),
            "unknown history field": bob.get("/history?sql=1"),
        }
        for what, answer in cases.items():
            assert 400 <= answer.status_code < 500, f"{what}: {answer.status_code} {answer.text[:200]}"
            assert "Traceback" not in answer.text, what
            assert b"SQLite format" not in answer.content, what
        assert cases["oversized form"].status_code == 413
        assert cases["unknown item"].status_code in (404, 422)
        assert verdicts(station) == before, "a refused verdict was stored"
        # Refusals are audited (who tried what); nothing else was written.
        assert station.count("SELECT count(*) FROM audit") >= audit_before
        assert bob.get("/").status_code == 200 and station.process.poll() is None


def test_undo_is_the_same_users_and_only_for_30_s(station: Station, verdict_feed: Path) -> None:
    with station.client("carol") as carol, station.client("bob") as bob:
        first, token, _ = an_item_to_judge(station, carol)
        given = carol.post(f"/items/{first}/verdict", data={"verdict": "REFERRED", "csrf": token})
        assert given.status_code == 303
        vid = int(given.headers["location"].rsplit("undo=", 1)[1])
        # Within the window: another operator may not, the one who gave it may; the item is back in the queue.
        bob_token = csrf_of(bob.get("/history").text)
        refused = bob.post(f"/verdicts/{vid}/undo", data={"csrf": bob_token})
        assert refused.status_code == 409 and "carol" in refused.text
        carol_token = csrf_of(carol.get("/history").text)
        assert carol.post(f"/verdicts/{vid}/undo", data={"csrf": carol_token}).status_code == 303
        assert station.count("SELECT count(*) FROM verdicts WHERE id = ? AND undone_by = 'carol'", vid) == 1
        undo_message = wait_until("the undo on the broker", lambda: [m for m in messages(verdict_feed)
                                                                    if m.get("undo_of") == vid])
        assert undo_message[0]["by"] == "carol"
        # After the window: refused, with the reason, and the verdict stands.
        second, token, _ = an_item_to_judge(station, carol, skip=frozenset({first}))
        given = carol.post(f"/items/{second}/verdict", data={"verdict": "REFERRED", "csrf": token})
        late = int(given.headers["location"].rsplit("undo=", 1)[1])
        with station.db() as db:
            at = db.execute("SELECT at FROM verdicts WHERE id = ?", (late,)).fetchone()["at"]
        time.sleep(max(0.0, at + 30.5 - time.time()))  # the window is real time: wait it out, exactly
        refused = carol.post(f"/verdicts/{late}/undo", data={"csrf": carol_token})
        assert refused.status_code == 409 and "30 s" in refused.text
        assert station.count("SELECT count(*) FROM verdicts WHERE id = ? AND undone_at IS NULL", late) == 1
        refusals = "SELECT count(*) FROM audit WHERE who = 'carol' AND action LIKE 'refused: undo of verdict%'"
        assert station.count(refusals) == 1


def test_logins_are_rate_limited_per_account(station: Station) -> None:
    with station.client() as client:
        for _ in range(5):
            page = client.get("/login")
            form = {"name": "sue", "password": "not-her-password", "csrf": csrf_of(page.text)}
            wrong = client.post("/login", data=form)
            assert wrong.status_code == 401
        page = client.get("/login")
        right = client.post("/login", data={"name": "sue", "password": "blue-kite-003", "csrf": csrf_of(page.text)})
        assert right.status_code == 429 and "Retry-After" in right.headers
    assert station.count("SELECT count(*) FROM audit WHERE who = 'sue' AND action LIKE 'console login failed%'") == 5
    with station.client("alice") as alice:  # another account, from the same address, still logs in
        assert alice.get("/").status_code == 200


def test_login_needs_its_form_token_and_sets_a_strict_cookie(station: Station) -> None:
    with station.client() as client:
        no_token = client.post("/login", data={"name": "alice", "password": "mint-tea-0001"})
        assert no_token.status_code == 403
        page = client.get("/login")
        done = client.post("/login", data={"name": "alice", "password": "mint-tea-0001", "csrf": csrf_of(page.text),
                                           "next": "//evil.example/"})
        assert done.status_code == 303 and done.headers["location"] == "/", "an open redirect"
        cookie = done.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie


def test_station_audit_verify_passes_and_names_an_edited_row(station: Station, tmp_path: Path) -> None:
    with station.client("alice") as alice:
        assert alice.get("/").status_code == 200  # at least a login in the chain
    copy = tmp_path / "var"
    copy.mkdir(mode=0o700)
    with sqlite3.connect(station.data_dir / "station.db") as live, sqlite3.connect(copy / "station.db") as kept:
        live.backup(kept)
    verify = [sys.executable, "-m", "station.cli", "audit", "verify", "--data-dir", str(copy)]
    intact = subprocess.run(verify, capture_output=True, text=True)
    assert intact.returncode == 0, intact.stderr
    with sqlite3.connect(copy / "station.db") as db:
        row = db.execute("SELECT id FROM audit WHERE action LIKE 'console login%' ORDER BY id LIMIT 1").fetchone()[0]
        db.execute("UPDATE audit SET who = 'mallory' WHERE id = ?", (row,))
    broken = subprocess.run(verify, capture_output=True, text=True)
    assert broken.returncode != 0
    assert f"row {row}" in broken.stderr and "changed" in broken.stderr
    shutil.rmtree(copy)


def test_an_account_disabled_at_the_box_is_logged_out(station: Station) -> None:
    with station.client("dave") as dave:
        assert dave.get("/queue").status_code == 200
        subprocess.run([sys.executable, "-m", "station.cli", "user", "disable", "dave", "--data-dir",
                        str(station.data_dir)], check=True, capture_output=True)
        ended = wait_until("dave's session ended", lambda: dave.get("/queue").status_code == 303, 15)
        assert ended
        assert dave.get("/queue").headers["location"].startswith("/login")
        page = dave.get("/login")
        again = dave.post("/login", data={"name": "dave", "password": "salt-pier-006", "csrf": csrf_of(page.text)})
        assert again.status_code == 401


def customs_says(station: Station, instruction_id: str, item_id: str, kind: str, **more: object) -> None:
    """Customs sends an instruction for `item_id` over the station's broker; returns once the station has stored it."""
    payload = json.dumps({"instruction_id": instruction_id, "item_id": item_id, "type": kind,
                          "issued_by": "customs-LHR", "issued_at": datetime.now(UTC).isoformat(), **more})
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(station.broker.port), "-q", "1",
                    "-t", "customs/v1/SITE-1/instructions", "-m", payload], check=True, timeout=10)
    wait_until(f"instruction {instruction_id} stored", lambda: station.count(
        "SELECT count(*) FROM customs_instructions WHERE instruction_id = ?", instruction_id), 15)


def test_a_customs_hold_is_shown_blocks_clearing_until_released_and_the_verdict_answers_customs(
        station: Station, tmp_path: Path) -> None:
    feed = tmp_path / "customs.jsonl"
    with feed.open("w") as sink, station.client("alice") as alice:
        topics = ["-t", "screening/v1/+/+/customs/screening_result", "-t", "screening/v1/+/+/items/alert"]
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(station.broker.port), "-q", "1", "-v",
                                *topics], stdout=sink, stderr=subprocess.DEVNULL)
        try:
            def with_an_id() -> tuple[int, str, bool] | None:
                no_id = frozenset(int(n) for (n,) in station.db().execute("SELECT id FROM items WHERE item_id IS NULL"))
                found = an_item_to_judge(station, alice, skip=no_id)
                return found if item_id_of(station, found[0]) else None
            pk, _, threat = wait_until("an item with an S10 id to judge", with_an_id, 60)
            item_id = item_id_of(station, pk)
            customs_says(station, "LHR-H-1", item_id, "screen", methods=["ETD"], text="check the lining")
            page = alice.get(f"/items/{pk}")
            assert page.status_code == 200
            assert "data-customs-held" in page.text and "check the lining" in page.text and "customs-LHR" in page.text
            for code in ("CLEARED", "FALSE_ALARM"):
                assert re.search(rf'data-verdict="{code}"[^>]*\sdisabled', page.text), code
            assert not re.search(r'data-verdict="THREAT"[^>]*\sdisabled', page.text)
            token = csrf_of(page.text)
            extra = {"reason_code": "BENIGN_LOOKALIKE"} if threat else {}
            refused = alice.post(f"/items/{pk}/verdict", data={"verdict": "CLEARED", "csrf": token, **extra})
            assert refused.status_code == 422 and "customs holds item" in refused.text
            assert station.count("SELECT count(*) FROM verdicts WHERE item = ?", pk) == 0
            assert station.count("SELECT count(*) FROM audit WHERE who = 'alice' AND action LIKE ?",
                                 f"refused: verdict on item {pk}: customs holds item%") == 1
            customs_says(station, "LHR-R-1", item_id, "release")
            page = alice.get(f"/items/{pk}")
            assert "data-customs-held" not in page.text and "LHR-H-1" in page.text  # shown, no longer in force
            assert not re.search(r'data-verdict="CLEARED"[^>]*\sdisabled', page.text)
            given = alice.post(f"/items/{pk}/verdict", data={"verdict": "CLEARED", "csrf": csrf_of(page.text),
                                                            "methods": ["PHS", "ETD"], **extra})
            assert given.status_code == 303, given.text
            vid = int(given.headers["location"].rsplit("undo=", 1)[1])

            def answered() -> list[dict[str, Any]]:
                return [m for m in messages(feed) if m.get("referral_reference") == "LHR-H-1"]
            (result,) = wait_until("the screening result on the broker", answered, 15)
            assert (result["item_id"], result["result"], result["person"]) == (item_id, "NO_THREAT_FOUND", "alice")
            assert result["methods"] == ["XRY", "PHS", "ETD"] and result["scan_reference"]["item_uid"]
            ended = wait_until("the alert's end", lambda: [m for m in messages(feed)
                                                           if m.get("msg_id", "").endswith(f"/alert/verdict/{vid}")])
            assert ended[0]["event"] == "end" and ended[0]["changes"] == ["verdict: CLEARED by alice"]
        finally:
            sub.terminate()
            sub.wait(timeout=10)


def item_id_of(station: Station, pk: int) -> str:
    with station.db() as db:
        return str(db.execute("SELECT item_id FROM items WHERE id = ?", (pk,)).fetchone()[0] or "")
