"""`station item hold|release|holds`: legal holds, which retention never deletes (station/holds.py).

ID is what operators see: the store's id (a number: the console's `/items/N`, the history's first
column), or an S10 id, scan id, barcode or uid (every item stored under it). Each hold and release is
audited with the OS user; it works while the daemon runs (its own connection waits for the writer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict

from station.cli.common import FAILED, OK, config_args, load
from station.control import os_user
from station.holds import Hold, HoldError, hold, holds, release
from station.store import Store


def add_item_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    item = sub.add_parser("item", help="stored items: legal holds (hold, release, holds) retention never deletes")
    actions = item.add_subparsers(required=True, metavar="ACTION")
    put = actions.add_parser("hold", help="keep an item whole (record and scan) whatever retention says")
    put.add_argument("id", metavar="ID", help="store id, S10 id, scan id, barcode or uid")
    put.add_argument("--reason", default="", help="why (a case number, who asked): shown in `station item holds`")
    off = actions.add_parser("release", help="end an item's legal hold: retention's rules apply to it again")
    off.add_argument("id", metavar="ID", help="store id, S10 id, scan id, barcode or uid")
    listing = actions.add_parser("holds", help="the items under a legal hold")
    listing.add_argument("--all", action="store_true", help="also the holds released")
    listing.add_argument("--json", action="store_true", help="one JSON object per hold")
    for p, handler in ((put, _hold), (off, _release), (listing, _holds)):
        config_args(p)
        p.set_defaults(handler=handler)


def _store(args: argparse.Namespace) -> Store | None:
    path = load(args).storage.data_dir / "station.db"
    if not path.exists():
        print(f"{path}: no store here", file=sys.stderr)
        return None
    return Store(path)


def _hold(args: argparse.Namespace) -> int:
    return _change(args, lambda store: hold(store, args.id, by=os_user(), reason=args.reason), "held")


def _release(args: argparse.Namespace) -> int:
    return _change(args, lambda store: release(store, args.id, by=os_user()), "released")


def _change(args: argparse.Namespace, change: Callable[[Store], list[Hold]], done: str) -> int:
    store = _store(args)
    if store is None:
        return FAILED
    with store:
        try:
            changed = change(store)
        except HoldError as err:
            print(f"error: {err}", file=sys.stderr)
            return FAILED
    for h in changed:
        print(f"item {h.item} ({h.item_id or 'no id'}) {done}")
    return OK


def _holds(args: argparse.Namespace) -> int:
    store = _store(args)
    if store is None:
        return FAILED
    with store:
        found = holds(store.db, released=args.all)
    if args.json:
        for h in found:
            print(json.dumps(asdict(h)))
        return OK
    if not found:
        print("no item is under a legal hold")
    for h in found:
        state = "held" if h.released_at is None else f"released {_when(h.released_at)} by {h.released_by}"
        print(f"{h.item:>8}  {h.item_id or 'no id':<13}  {_when(h.held_at)}  {h.held_by:<12}  {state}"
              + (f"  {h.reason}" if h.reason else ""))
    return OK


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
