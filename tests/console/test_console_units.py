"""The console's small parts on their own: sessions, the login limit, review locks, the history query."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.config import ConfigError, parse_config
from station.console.app import ItemLocks, _local
from station.console.auth import PERMISSIONS, WINDOW_S, LoginLimit, Sessions, csrf_ok
from station.console.queries import HistoryFilter


def test_a_session_ends_after_its_lifetime_or_when_idle() -> None:
    sessions = Sessions(lifetime_s=100, idle_s=10)
    s = sessions.open("alice", "operator", now=0)
    assert sessions.get(s.token, now=9) is s
    assert sessions.get(s.token, now=18) is s  # each use restarts the idle clock
    assert sessions.get(s.token, now=29) is None  # 11 s unused
    long = sessions.open("alice", "operator", now=0)
    for t in range(5, 100, 5):
        assert sessions.get(long.token, now=t) is long
    assert sessions.get(long.token, now=101) is None  # used all along, but a login lasts a shift
    assert sessions.get("made-up", now=1) is None and sessions.get(None) is None


def test_tokens_are_unguessable_and_csrf_compares_exactly() -> None:
    sessions = Sessions(100, 100)
    a, b = sessions.open("a", "operator"), sessions.open("a", "operator")
    assert a.token != b.token and a.csrf != b.csrf and len(a.token) >= 40
    assert csrf_ok(a.csrf, a.csrf) and not csrf_ok(a.csrf, b.csrf) and not csrf_ok(a.csrf, None)
    assert not csrf_ok(a.csrf, "")


def test_roles() -> None:
    assert "judge" in PERMISSIONS["operator"] and "technician" not in PERMISSIONS["operator"]
    assert "judge" not in PERMISSIONS["technician"] and "technician" in PERMISSIONS["technician"]
    assert PERMISSIONS["admin"] >= PERMISSIONS["supervisor"] | PERMISSIONS["technician"]


def test_the_login_limit_holds_an_account_and_then_an_address() -> None:
    limit = LoginLimit(attempts=3)
    for t in range(3):
        assert limit.retry_after("sue", "10.0.0.1", now=t) == 0
        limit.failed("sue", "10.0.0.1", now=t)
    assert limit.retry_after("sue", "10.0.0.9", now=3) == pytest.approx(WINDOW_S - 3)  # any address
    assert limit.retry_after("bob", "10.0.0.1", now=3) == 0  # another account, the same workstation
    assert limit.retry_after("sue", "10.0.0.1", now=WINDOW_S + 0.5) == 0  # the oldest failure aged out
    for n in range(12):  # many accounts tried from one address: the address is held too
        limit.failed(f"user{n}", "10.0.0.2", now=400)
    assert limit.retry_after("newcomer", "10.0.0.2", now=401) > 0
    limit.succeeded("sue")
    assert limit.retry_after("sue", "10.0.0.1", now=2) == 0


def test_a_lock_is_one_operators_until_released_or_silent() -> None:
    locks = ItemLocks(hold_s=90)
    assert locks.take(7, "alice", now=0) == "alice"
    assert locks.take(7, "bob", now=30) == "alice"
    assert locks.take(7, "alice", now=60) == "alice"  # the keep-alive
    assert locks.take(7, "bob", now=140) == "alice"  # 80 s since the keep-alive
    assert locks.take(7, "bob", now=151) == "bob"  # alice left without a word
    locks.release(7, "alice")  # not hers any more: nothing happens
    assert locks.holders(now=152) == {7: "bob"} and locks.held_by_others("alice", now=152) == frozenset({7})
    locks.release_all("bob")
    assert locks.holders(now=152) == {}


def test_history_filters_are_checked() -> None:
    f = HistoryFilter.parse({"s10": " RR123456785GB ", "decision": "INSPECT", "since": "2026-12-01",
                             "until": "2026-12-01", "before": "500"})
    assert f.s10 == "RR123456785GB" and f.before_id == 500
    assert f.since is not None and f.until is not None and f.until - f.since == pytest.approx(86_400, abs=3600)
    assert HistoryFilter.parse({"s10": "", "reason": ""}) == HistoryFilter()
    for bad in ({"since": "yesterday"}, {"before": "-1"}, {"sql": "1"}, {"operator": "x" * 65}):
        with pytest.raises(ValueError):
            HistoryFilter.parse(bad)


@given(st.dictionaries(st.text(max_size=10), st.text(max_size=70), max_size=5))
def test_history_parse_raises_only_value_error(query: dict[str, str]) -> None:
    try:
        HistoryFilter.parse(query)
    except ValueError:
        pass


@pytest.mark.parametrize("target, safe", [("/queue", "/queue"), ("//evil.example/", ""), ("https://x.y/", ""),
                                          ("/\\evil", ""), ("", ""), (None, "")])
def test_a_redirect_after_login_stays_on_the_console(target: object, safe: str) -> None:
    assert _local(target) == safe


def test_web_config() -> None:
    web = parse_config({"web": {"port": 9443, "tls_cert": "/etc/c.pem", "tls_key": "/etc/k.pem"}}).web
    assert web.port == 9443 and web.session_hours == 8
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        parse_config({"web": {"tls_cert": "/etc/c.pem"}})
    with pytest.raises(ConfigError, match=r"web\.sesion_hours: unknown key"):
        parse_config({"web": {"sesion_hours": 4}})
