"""Console forms: what a browser (or anyone who reaches the console's port) posts and asks, over HTTP to the
real Starlette application (`station.console.app.Console.app`, as uvicorn serves it): the login, verdicts,
locks, undo, alarm and lane actions, the technician's forms, and the item, image and history queries.

The console is built as the daemon builds it, over a real store with accounts and INSPECT items, the real
store writer and readers; the lane behind it is a status board and a control channel that records what it
is asked (the control channel's own checks are station/control.py's, not the console's). The contract
(station/console/app.py): every answer is a page, a redirect or a 4xx that says why, never a 5xx; a refused
verdict stores no verdict and no message; a form never reaches the control channel as anything but the
action its route names.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from station.accounts import add_user
from station.config import LaneSection, WebSection
from station.console.app import MAX_BODY, Console
from station.console.server import LaneAccess
from station.lane.status import Counters, LaneStatus, ModelInfo, Outbox, StatusBoard
from station.mqtt_link import Topics
from station.store import Store
from station.writer import StoreWriter
from tests.fuzz.harness import budget, fuzzes
from tests.station.test_reviews import row

INPUT = "console forms"

ITEMS = 400  # INSPECT items to judge (a verdict takes one for good)
PASSWORDS = {"alice": ("operator", "mint-tea-0001"), "tom": ("technician", "red-lamp-0004")}
LANE_ACTIONS = ("start", "stop", "reset", "maintenance")


class Control:
    """The control channel's place: records each action the console sends, answers as it would."""

    def __init__(self) -> None:
        self.asked: list[dict[str, object]] = []

    async def handle(self, request: dict[str, object], who: str) -> dict[str, object]:
        self.asked.append(request)
        if request["action"] == "model-status":
            return {"ok": True, "model": None}
        return {"ok": True, "state": "RUNNING"}


@dataclass
class Lane:
    console: Console
    control: Control
    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    store_path: Path
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # user -> (session cookie, csrf)

    def send(self, method: str, url: str, user: str | None, cookies: dict[str, str] | None = None,
             **kw: Any) -> httpx.Response:
        """One request with `user`'s session (None: none), and only the cookies given."""
        self.client.cookies.clear()
        for name, value in ({"station_session": self.tokens[user][0]} if user else cookies or {}).items():
            self.client.cookies.set(name, value)
        return self.loop.run_until_complete(self.client.request(method, url, **kw))

    def count(self, table: str) -> int:
        with sqlite3.connect(self.store_path) as db:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def status() -> LaneStatus:
    return LaneStatus(1, time.time(), "S1", "L1", "RUNNING", None, False, ModelInfo("m", "1", "abc"), (),
                      Outbox(0, None, 0), Counters(ITEMS, 0, ITEMS), (), (), 0.0, 0)


def log_in(lane: Lane, user: str) -> None:
    page = lane.send("GET", "/login", None)
    login_cookie = page.cookies.get("station_login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token and login_cookie, page.text[:300]
    done = lane.send("POST", "/login", None, cookies={"station_login": login_cookie},
                     data={"name": user, "password": PASSWORDS[user][1], "csrf": token[1]})
    assert done.status_code == 303, done.text[:300]
    session = done.cookies.get("station_session")
    assert session
    lane.tokens[user] = (session, "")
    page = lane.send("GET", "/history", user)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text) or re.search(r'csrf-token" content="([^"]+)"',
                                                                              page.text)
    assert csrf, page.text[:500]
    lane.tokens[user] = (session, csrf[1])


@pytest.fixture
def lane(tmp_path: Path) -> Iterator[Lane]:
    store_path = tmp_path / "station.db"
    with Store(store_path) as store:
        for name, (role, password) in PASSWORDS.items():
            add_user(store, name, role, password, by="fuzz")
        for i in range(ITEMS):
            store.record_item(row(f"u{i}", threat=i % 2 == 0, item_id=None if i % 7 == 0 else "RR473124829GB"), [])
    loop = asyncio.new_event_loop()
    writer = StoreWriter(store_path)
    loop.run_until_complete(writer.__aenter__())
    board = StatusBoard()
    board.publish(status())
    control = Control()
    access = LaneAccess(board=board, control=cast(Any, control), writer=writer, topics=Topics("S1", "L1"),
                        lane=LaneSection(), notify=lambda: None, registers=dict, frames=dict,
                        threat_classes=lambda: ("gun", "knife"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    console = Console(access, store_path, tmp_path / "images", WebSection(metrics=False), sock)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=console.app, raise_app_exceptions=False),
                               base_url="http://lane", follow_redirects=False)
    made = Lane(console, control, loop, client, store_path)
    try:
        for user in PASSWORDS:
            log_in(made, user)
        yield made
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(writer.__aexit__(None, None, None))
        console.close()
        sock.close()
        loop.close()


# ---- what a stranger posts ---------------------------------------------------------------------------

texts = st.one_of(st.text(max_size=30), st.sampled_from(["", " ", "THREAT", "CLEARED", "FALSE_ALARM", "REFERRED",
                                                          "gun", "OTHER", "NaN", "inf", "-1", "1e400", "0x1",
                                                          "1" * 400, "\x00", "\ud800", "é" * 300]))
huge = st.sampled_from([MAX_BODY // 2, MAX_BODY - 200, MAX_BODY + 1]).map(lambda n: "x" * n)
FIELDS = ["verdict", "threat_class", "reason_code", "note", "methods", "shown_at", "name", "value", "path", "next",
          "password", "csrf", "undo"]
forms = st.lists(st.tuples(st.sampled_from(FIELDS) | st.text(max_size=8), texts | huge), max_size=6)
pks = st.integers(1, ITEMS + 3) | st.sampled_from([0, 2**31, 2**63 - 1, 2**63, 10**30])


def nearly(good: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """A route's own form: its fields with good values mostly, and any field repeated or added."""
    first, *rest = good
    fields = st.fixed_dictionaries({first: st.one_of(good[first], good[first], texts)},
                                   optional={k: st.one_of(good[k], good[k], texts) for k in rest})
    extra = st.lists(st.tuples(st.sampled_from([*good, *FIELDS]), texts), max_size=2)
    return st.tuples(fields.map(lambda d: list(d.items())), st.just([]) | extra).map(lambda t: t[0] + t[1])


verdict_form = nearly({"verdict": st.sampled_from(["CLEARED", "THREAT", "REFERRED", "FALSE_ALARM"]),
                       "threat_class": st.sampled_from(["gun", "knife", "Gun", "a" * 33]),
                       "reason_code": st.sampled_from(["BENIGN_LOOKALIKE", "OTHER", "nope"]),
                       "note": st.text(max_size=20) | huge, "methods": st.sampled_from(["ETD", "PHS", "XRY", "??"]),
                       "shown_at": st.sampled_from([str(time.time()), "nan", "1e300", "-5"])})
good_verdicts = st.sampled_from([[("verdict", "REFERRED")], [("verdict", "THREAT"), ("threat_class", "gun")],
                                 [("verdict", "CLEARED"), ("reason_code", "BENIGN_LOOKALIKE")],
                                 [("verdict", "FALSE_ALARM"), ("reason_code", "OTHER"), ("note", "the lining")],
                                 [("verdict", "REFERRED"), ("methods", "ETD"), ("methods", "PHS")]])
posts = st.one_of(  # (route, form, who): mostly someone whose role may do it
    st.tuples(st.sampled_from(range(1, ITEMS + 1)).map(lambda pk: f"/items/{pk}/verdict"), good_verdicts,
              st.just("alice")),
    st.tuples(st.sampled_from(range(1, ITEMS + 1)).map(lambda pk: f"/items/{pk}/verdict"), verdict_form,
              st.just("alice")),  # a fresh item most times: each takes one verdict
    st.tuples(pks.map(lambda pk: f"/items/{pk}/verdict"), verdict_form, st.just("alice")),
    st.tuples(st.one_of(pks.map(lambda pk: f"/items/{pk}/lock"), pks.map(lambda pk: f"/items/{pk}/release"),
                        pks.map(lambda pk: f"/verdicts/{pk}/undo")), forms, st.just("alice")),
    st.tuples(st.sampled_from([*LANE_ACTIONS, "explode", "%2e%2e"]).map(lambda a: f"/lane/{a}"), forms,
              st.just("tom")),
    st.tuples(st.tuples(st.text(min_size=1, max_size=12), st.sampled_from(["ack", "clear"])).map(
        lambda t: f"/alarms/{quote(t[0], safe='')}/{t[1]}"), forms, st.just("tom")),
    st.tuples(st.just("/technician/plc-write"), nearly({"name": st.sampled_from(["gate_cmd", "belt_run", "x"]),
                                                        "value": st.sampled_from(["1", "0", "true", "2.5", "1e15",
                                                                                  "nan", "-0", "x"])}),
              st.just("tom")),
    st.tuples(st.sampled_from(["/technician/model/load", "/technician/model/rollback", "/technician/model/x",
                               "/technician/scanner-selftest"]), nearly({"path": st.text(max_size=30)}),
              st.just("tom")),
    st.tuples(st.sampled_from(["/items/x/verdict", "/nowhere", "/items/1/verdict", "/technician/plc-write",
                               "/lane/stop", "/logout"]), forms, st.sampled_from(["alice", "tom", None])),
)


def with_token(lane: Lane, user: str | None, form: list[tuple[str, str]], csrf: str) -> list[tuple[str, str]]:
    """The form's fields (repeated ones too), as a browser sends text, with the session's token or not."""
    pairs = [(k, v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")) for k, v in form]
    if user and csrf == "right":
        pairs.append(("csrf", lane.tokens[user][1]))
    elif user and csrf == "wrong":
        pairs.append(("csrf", lane.tokens[user][1][:-2] + "xx"))
    return pairs


def urlencoded(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return {"content": urlencode(pairs).encode(), "headers": {"content-type": "application/x-www-form-urlencoded"}}


@budget(150, deadline_ms=10_000)
@given(posts, st.sampled_from(["right", "right", "right", "wrong", "none"]),
       st.sampled_from(["form", "form", "multipart", "raw"]), st.binary(max_size=200))
@example(("/items/1/verdict", [("verdict", "REFERRED")], "alice"), "right", "form", b"")
@example((f"/items/{10**30}/verdict", [("verdict", "REFERRED")], "alice"), "right", "form", b"")  # finding 19
@example((f"/verdicts/{2**63}/undo", [], "alice"), "right", "form", b"")
@fuzzes(INPUT)
def test_any_post_gets_a_page_or_a_4xx_and_a_refused_verdict_stores_nothing(
        lane: Lane, post: tuple[str, list[tuple[str, str]], str | None], csrf: str, encoding: str, raw: bytes) -> None:
    route, form, user = post
    if route == "/logout" and user is not None:
        user = None  # a session of its own would end: the next examples need theirs
    before = (lane.count("verdicts"), lane.count("outbox"))
    asked = len(lane.control.asked)
    kw: dict[str, Any]
    if encoding == "raw":
        kw = {"content": raw, "headers": {"content-type": "application/x-www-form-urlencoded"}}
        if csrf == "right" and user:
            kw["headers"]["x-csrf-token"] = lane.tokens[user][1]
    elif encoding == "multipart":
        kw = {"files": [(k, (None, v.encode())) for k, v in with_token(lane, user, form, csrf)]}
    else:
        kw = urlencoded(with_token(lane, user, form, csrf))
    answer = lane.send("POST", route, user, **kw)
    event(f"{re.sub(r'[0-9]+', 'N', route)[:24]} {answer.status_code}")
    assert answer.status_code < 500, f"{route}: {answer.status_code} {answer.text[:300]}"
    assert "Traceback" not in answer.text
    after = (lane.count("verdicts"), lane.count("outbox"))
    if route.endswith("/verdict") and answer.status_code == 303:
        assert after[0] == before[0] + 1 and after[1] > before[1]
    else:
        assert after[0] == before[0] or route.endswith("/undo"), "a refused form stored a verdict"
    for request in lane.control.asked[asked:]:  # only the route's own action, with its own fields
        assert request["action"] in (*LANE_ACTIONS, "alarm-ack", "alarm-clear", "plc-write", "model-load",
                                     "model-rollback", "scanner-selftest", "model-status")
        if request["action"] == "plc-write":
            assert isinstance(request["value"], bool | int | float) and isinstance(request["name"], str)


# ---- what a stranger asks ------------------------------------------------------------------------------

query_values = st.one_of(st.text(max_size=20), st.sampled_from([
    "2026-12-01", "9999-12-31", "0001-01-01", "2026-02-30", "99999999999999999999", "١٢", "²", "-1", "INSPECT",
    "RR473124829GB", "%", "' OR 1=1 --"]))
queries = st.dictionaries(st.sampled_from(["s10", "since", "until", "decision", "reason", "verdict", "operator",
                                           "before", "x", "notice", "undo", "fmt", "size", "contrast", "tool"]),
                          query_values, max_size=4)


@budget(120, deadline_ms=10_000)
@given(st.sampled_from(["/history", "/items/{pk}", "/items/{pk}/image", "/queue", "/", "/technician"]), pks, queries,
       st.sampled_from(["alice", "tom", None]))
@example("/history", 0, {"until": "9999-12-31"}, "alice")  # finding 20
@example("/history", 0, {"before": "9" * 30}, "alice")  # finding 19
@example("/items/{pk}", 10**30, {}, "alice")
@example("/history", 0, {"decision": "0"}, "alice")  # finding 21
@example("/history", 0, {"since": "0001-01-01"}, "alice")
@fuzzes(INPUT)
def test_any_query_gets_a_page_or_a_4xx(lane: Lane, path: str, pk: int, query: dict[str, str],
                                        user: str | None) -> None:
    answer = lane.send("GET", path.format(pk=pk), user, params=query)
    event(f"GET {path} {answer.status_code}")
    assert answer.status_code < 500, f"{path} {query}: {answer.status_code} {answer.text[:300]}"
    assert "Traceback" not in answer.text


@budget(40, deadline_ms=10_000)
@given(forms, st.booleans())
@fuzzes(INPUT)
def test_any_login_form_gets_the_login_page_a_4xx_or_a_redirect_home(lane: Lane, form: list[tuple[str, str]],
                                                                      token_given: bool) -> None:
    page = lane.send("GET", "/login", None)
    cookie = page.cookies.get("station_login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token and cookie
    pairs = with_token(lane, None, form, "none") + ([("csrf", token[1])] if token_given else [])
    answer = lane.send("POST", "/login", None, cookies={"station_login": cookie}, **urlencoded(pairs))
    assert answer.status_code in (303, 401, 403, 400, 413, 429), f"{answer.status_code} {answer.text[:300]}"
    if answer.status_code == 303:
        target = answer.headers["location"]
        assert target.startswith("/") and not target.startswith("//") and "\\" not in target
