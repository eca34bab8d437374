"""Who may do what in the console: sessions, CSRF tokens, the login rate limit and the role table.

Sessions live in the daemon's memory: a restart logs everyone out, which at a lane is what a
supervisor expects after a restart anyway, and nothing secret is ever written to disk. The cookie holds
only a random token (HttpOnly, SameSite=Strict, Secure under TLS); each session has its own CSRF token,
which every form and every htmx request must send back.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

# What each role may do. Verdicts are the screeners' (operator, supervisor); the hardware is the
# technician's; the admin may do everything the console offers (accounts are made at the box).
PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": frozenset({"view", "judge", "ack"}),
    "supervisor": frozenset({"view", "judge", "ack", "lane", "audit"}),
    "technician": frozenset({"view", "ack", "lane", "technician"}),
    "admin": frozenset({"view", "judge", "ack", "lane", "technician", "audit"}),
}

COOKIE = "station_session"
LOGIN_COOKIE = "station_login"  # the login form's CSRF token, before there is a session
WINDOW_S = 300.0  # the login rate limit's window
ADDRESS_FACTOR = 4


@dataclass
class Session:
    token: str
    user: str
    role: str
    csrf: str
    created: float  # time.monotonic()
    last_seen: float
    checked: float = 0.0  # when its account was last read from the store (console.app)

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


@dataclass
class Sessions:
    lifetime_s: float
    idle_s: float
    _by_token: dict[str, Session] = field(default_factory=dict)

    def open(self, user: str, role: str, now: float | None = None) -> Session:
        now = time.monotonic() if now is None else now
        for token in [t for t, s in self._by_token.items()
                      if now - s.created > self.lifetime_s or now - s.last_seen > self.idle_s]:
            del self._by_token[token]  # ended ones, forgotten
        session = Session(secrets.token_urlsafe(32), user, role, secrets.token_urlsafe(32), now, now, now)
        self._by_token[session.token] = session
        return session

    def get(self, token: str | None, now: float | None = None) -> Session | None:
        """The live session with this token (touched), or None: unknown, expired or idle too long."""
        if not token:
            return None
        now = time.monotonic() if now is None else now
        session = self._by_token.get(token)
        if session is None:
            return None
        if now - session.created > self.lifetime_s or now - session.last_seen > self.idle_s:
            del self._by_token[token]
            return None
        session.last_seen = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def close_user(self, user: str) -> None:
        """End every session of an account (it was disabled, or its role changed)."""
        for token in [t for t, s in self._by_token.items() if s.user == user]:
            del self._by_token[token]


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


@dataclass
class LoginLimit:
    """At most `attempts` failed logins per account name, and ADDRESS_FACTOR times as many per client
    address (a lane's operators share one workstation), in any WINDOW_S."""

    attempts: int
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, name: str, address: str, now: float | None = None) -> float:
        """Seconds until a login for `name` from `address` may be tried again (0: now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        for key, most in ((f"user:{name}", self.attempts), (f"addr:{address}", self.attempts * ADDRESS_FACTOR)):
            times = self._failures.get(key)
            while times and now - times[0] > WINDOW_S:
                times.popleft()
            if times is not None and len(times) >= most:
                wait = max(wait, WINDOW_S - (now - times[-most]))
        return wait

    def failed(self, name: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in (f"user:{name}", f"addr:{address}"):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, name: str) -> None:
        self._failures.pop(f"user:{name}", None)
