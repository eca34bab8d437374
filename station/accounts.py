"""Console accounts: operator, supervisor, technician, admin. Passwords are kept only as argon2id hashes.

There is no default account and no default password: the first admin is made at the box with
`station user add NAME --role admin`. Every change is in the audit chain with the OS user who made it.
A disabled account cannot log in, and is kept (its name stays on the verdicts it gave).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from station.store import Store

ROLES = ("operator", "supervisor", "technician", "admin")
MIN_PASSWORD = 10
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,31}$")
_HASHER = PasswordHasher()  # argon2id, the library's current defaults (RFC 9106)


class AccountError(ValueError):
    """A request about an account that cannot be done; the message says why."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    created_at: float
    disabled_at: float | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


def add_user(store: Store, name: str, role: str, password: str, *, by: str) -> User:
    if not _NAME.match(name):
        raise AccountError(f"user name {name!r}: 2-32 characters, lower-case letters, digits, '.', '_' or '-', "
                           "starting with a letter")
    if role not in ROLES:
        raise AccountError(f"role {role!r}: one of {', '.join(ROLES)}")
    _check_password(name, password)
    if store.db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
        raise AccountError(f"user {name!r} exists already")
    at = time.time()
    with store.transaction() as db:
        db.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES (?,?,?,?)",
                   (name, role, _HASHER.hash(password), at))
    store.add_audit(by, f"user add {name} ({role})")
    return User(name, role, at, None)


def set_password(store: Store, name: str, password: str, *, by: str) -> None:
    _check_password(name, password)
    _existing(store, name)
    with store.transaction() as db:
        db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (_HASHER.hash(password), name))
    store.add_audit(by, f"user passwd {name}")


def disable_user(store: Store, name: str, *, by: str) -> None:
    if not _existing(store, name).active:
        raise AccountError(f"user {name!r} is disabled already")
    with store.transaction() as db:
        db.execute("UPDATE users SET disabled_at = ? WHERE name = ?", (time.time(), name))
    store.add_audit(by, f"user disable {name}")


def users(store: Store) -> list[User]:
    return [User(r["name"], r["role"], r["created_at"], r["disabled_at"])
            for r in store.db.execute("SELECT name, role, created_at, disabled_at FROM users ORDER BY name")]


def authenticate(store: Store, name: str, password: str) -> User | None:
    """The account, if `password` is its password and it is not disabled; else None (whichever it was)."""
    row = store.db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
    if row is None:
        _HASHER.hash(password)  # about the same time as a wrong password: the answer says nothing of names
        return None
    try:
        _HASHER.verify(row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        return None
    if row["disabled_at"] is not None:
        return None
    return User(row["name"], row["role"], row["created_at"], row["disabled_at"])


def _existing(store: Store, name: str) -> User:
    for user in users(store):
        if user.name == name:
            return user
    raise AccountError(f"no user {name!r}")


def _check_password(name: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
    if password.lower() == name.lower() or name.lower() in password.lower():
        raise AccountError("the password must not contain the user name")
