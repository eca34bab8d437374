"""`station audit verify|list`: the store's hash-chained audit of every operator and technician action
(station/store.py `add_audit`): who did what, and when; `verify` recomputes the chain and names the
first row that was changed, removed or inserted."""

from __future__ import annotations

import argparse
import sys
import time

from station.cli.common import FAILED, OK, config_args, load, positive_int
from station.store import Store


def add_audit_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="the audit of every operator and technician action: verify, list")
    actions = audit.add_subparsers(required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="recompute the hash chain; exit 1 naming the first broken row")
    config_args(verify)
    verify.set_defaults(handler=_verify)
    listing = actions.add_parser("list", help="the latest audit rows")
    config_args(listing)
    listing.add_argument("--last", type=positive_int, default=20, metavar="N", help="how many rows (default 20)")
    listing.set_defaults(handler=_list)


def _open(args: argparse.Namespace) -> Store | None:

    path = load(args).storage.data_dir / "station.db"
    if not path.exists():
        print(f"{path}: no store here", file=sys.stderr)
        return None
    return Store(path)


def _verify(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return FAILED
    with store:
        count, broken = store.verify_audit()
    if broken:
        print(f"audit chain BROKEN at {broken} ({count} rows read)", file=sys.stderr)
        return FAILED
    print(f"audit chain intact: {count} rows")
    return OK


def _list(args: argparse.Namespace) -> int:
    store = _open(args)
    if store is None:
        return FAILED
    with store:
        rows = store.db.execute("SELECT id, at, who, action FROM audit ORDER BY id DESC LIMIT ?",
                                (args.last,)).fetchall()
    for row in reversed(rows):
        print(f"{row['id']:>6}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(row['at']))}  {row['who']:<12}  "
              f"{row['action']}")
    return OK
