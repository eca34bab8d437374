"""Console accounts made at the box: `station user add|passwd|disable|list`, argon2id, audited."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from station.accounts import AccountError, add_user, authenticate, users
from station.store import Store


def station(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "station.cli", *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def test_there_is_no_account_until_the_first_admin_is_made(tmp_path: Path) -> None:
    empty = station("user", "list", "--data-dir", str(tmp_path))
    assert empty.returncode == 0 and "no accounts" in empty.stdout
    made = station("user", "add", "ana", "--role", "admin", "--password-stdin", "--data-dir", str(tmp_path),
                   stdin="correct horse battery\n")
    assert made.returncode == 0, made.stderr
    listed = station("user", "list", "--data-dir", str(tmp_path))
    assert "ana" in listed.stdout and "admin" in listed.stdout and "active" in listed.stdout
    with Store(tmp_path / "station.db") as store:
        (row,) = store.db.execute("SELECT password_hash FROM users").fetchall()
        assert row[0].startswith("$argon2id$") and "correct horse" not in row[0]
        assert authenticate(store, "ana", "correct horse battery") is not None
        assert authenticate(store, "ana", "correct horse batterY") is None
        assert authenticate(store, "nobody", "correct horse battery") is None
        assert [r["action"] for r in store.db.execute("SELECT action FROM audit")] == ["user add ana (admin)"]
        assert store.verify_audit() == (1, None)


def test_a_password_change_and_a_disabled_account(tmp_path: Path) -> None:
    base = ("--data-dir", str(tmp_path))
    station("user", "add", "olga", "--role", "operator", "--password-stdin", *base, stdin="first password 1\n")
    changed = station("user", "passwd", "olga", "--password-stdin", *base, stdin="second password 2\n")
    assert changed.returncode == 0
    with Store(tmp_path / "station.db") as store:
        assert authenticate(store, "olga", "first password 1") is None
        assert authenticate(store, "olga", "second password 2") is not None
    disabled = station("user", "disable", "olga", *base)
    assert disabled.returncode == 0
    with Store(tmp_path / "station.db") as store:
        assert authenticate(store, "olga", "second password 2") is None, "a disabled account cannot log in"
        (olga,) = users(store)
        assert not olga.active
    again = station("user", "disable", "olga", *base)
    assert again.returncode == 1 and "disabled already" in again.stderr


@pytest.mark.parametrize("name, role, password, why", [
    ("olga", "god", "long enough pw", "invalid choice: 'god'"),
    ("olga", "operator", "short", "at least 10 characters"),
    ("olga", "operator", "my-olga-password", "must not contain the user name"),
    ("Olga Smith", "operator", "long enough pw", "lower-case letters"),
])
def test_bad_accounts_are_refused_naming_why(tmp_path: Path, name: str, role: str, password: str, why: str) -> None:
    done = station("user", "add", name, "--role", role, "--password-stdin", "--data-dir", str(tmp_path),
                   stdin=password + "\n")
    assert done.returncode == 2 and why in done.stderr
    with Store(tmp_path / "station.db") as store:
        assert users(store) == []


def test_a_name_is_taken_once_and_no_password_comes_from_a_pipe_without_asking(tmp_path: Path) -> None:
    with Store(tmp_path / "station.db") as store:
        add_user(store, "tom", "technician", "a good password", by="root")
        with pytest.raises(AccountError, match="exists already"):
            add_user(store, "tom", "operator", "another password", by="root")
    piped = station("user", "add", "sue", "--role", "operator", "--data-dir", str(tmp_path), stdin="password123\n")
    assert piped.returncode == 2 and "--password-stdin" in piped.stderr
