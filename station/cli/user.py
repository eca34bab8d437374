"""`station user add|passwd|disable|list`: the console's accounts, made at the box (station/accounts.py).

Passwords are asked twice on a terminal, or read as one line from standard input with
`--password-stdin` (for provisioning scripts); never on the command line, where `ps` would show them.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable

from station.accounts import ROLES, AccountError, add_user, disable_user, set_password, users
from station.cli.common import FAILED, OK, USAGE, config_args, load
from station.control import os_user
from station.store import Store


def add_user_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = sub.add_parser("user", help="console accounts: add, passwd, disable, list (no default account exists)")
    actions = user.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="make an account (the first admin: --role admin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    passwd = actions.add_parser("passwd", help="set an account's password")
    passwd.add_argument("name")
    for p in (add, passwd):
        p.add_argument("--password-stdin", action="store_true",
                       help="read the password as one line from standard input")
    disable = actions.add_parser("disable", help="stop an account from logging in (it is kept, with its history)")
    disable.add_argument("name")
    listing = actions.add_parser("list", help="the accounts, their roles, and which are disabled")
    for p, handler in ((add, _add), (passwd, _passwd), (disable, _disable), (listing, _list)):
        config_args(p)
        p.set_defaults(handler=handler)


def _store(args: argparse.Namespace) -> Store:
    data_dir = load(args).storage.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    return Store(data_dir / "station.db")


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        print("error: no terminal to ask the password on: use --password-stdin", file=sys.stderr)
        return None
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        print("error: the two passwords differ", file=sys.stderr)
        return None
    return first


def _add(args: argparse.Namespace) -> int:
    password = _password(args)
    if password is None:
        return USAGE
    return _change(args, lambda store: add_user(store, args.name, args.role, password, by=os_user()),
                   f"user {args.name} added ({args.role})", refused=USAGE)


def _passwd(args: argparse.Namespace) -> int:
    password = _password(args)
    if password is None:
        return USAGE
    return _change(args, lambda store: set_password(store, args.name, password, by=os_user()),
                   f"password of {args.name} changed")


def _disable(args: argparse.Namespace) -> int:
    return _change(args, lambda store: disable_user(store, args.name, by=os_user()), f"user {args.name} disabled")


def _change(args: argparse.Namespace, change: Callable[[Store], object], done: str, refused: int = FAILED) -> int:
    """One change to the accounts: `done` said when it is made, the reason on standard error when refused."""
    with _store(args) as store:
        try:
            change(store)
        except AccountError as err:
            print(f"error: {err}", file=sys.stderr)
            return refused
    print(done)
    return OK


def _list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        accounts = users(store)
    if not accounts:
        print("no accounts: make the first admin with `station user add NAME --role admin`")
    for user in accounts:
        since = time.strftime("%Y-%m-%d", time.localtime(user.created_at))
        state = "active" if user.disabled_at is None else \
            "disabled " + time.strftime("%Y-%m-%d", time.localtime(user.disabled_at))
        print(f"{user.name:<20} {user.role:<11} since {since}  {state}")
    return OK
