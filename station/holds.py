"""Legal holds: an item kept whole, its record and its scan, whatever retention's ages and shares say.

A hold is put on and taken off at the box (`station item hold ID`, `station item release ID`), with the
OS user, and each is one transaction with its audit row: the hold is stored with its audit or not at all.
It works while the daemon runs: the command's own connection waits for the daemon's writer (SQLite's
write lock, WAL), as `station user add` does. Retention checks holds inside its own deleting transaction
(`held_sql`), so an item held before a deletion commits is never deleted.

An ID names items as operators see them: a number is the store's id (the console's `/items/N`, the
history's first column); anything else is an S10 id, a scan id, a barcode or an item uid, and names every
item stored under it (a parcel that passed the lane twice is held twice).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from station.store import Store, append_audit

MAX_REASON = 500


class HoldError(ValueError):
    """A hold or release that cannot be done; the message says why."""


@dataclass(frozen=True)
class Hold:
    id: int
    item: int  # items.id
    item_id: str | None  # the item's S10 id
    reason: str
    held_by: str
    held_at: float
    released_by: str | None = None
    released_at: float | None = None


def held_sql(item: str) -> str:
    """SQL, true while the item aliased `item` is under a legal hold."""
    return f"EXISTS (SELECT 1 FROM legal_holds AS h WHERE h.item = {item}.id AND h.released_at IS NULL)"


def find_items(db: sqlite3.Connection, ref: str) -> list[sqlite3.Row]:
    """The items `ref` names (see the module's note), oldest first."""
    ref = ref.strip()
    if ref.isdigit():
        return db.execute("SELECT id, item_id FROM items WHERE id = ?", (int(ref),)).fetchall()
    return db.execute("SELECT id, item_id FROM items WHERE item_id = ?1 OR scan_id = ?1 OR barcode = ?1 OR uid = ?1"
                      " ORDER BY id", (ref,)).fetchall()


def hold(store: Store, ref: str, *, by: str, reason: str = "", now: float | None = None) -> list[Hold]:
    """Put every item `ref` names under a legal hold (those not held already). HoldError, and nothing
    stored, when `ref` names no item, every one is held already, or the reason is unfit."""
    reason = _reason(reason)
    at = time.time() if now is None else now
    made: list[Hold] = []
    with store.transaction() as db:
        items = _items(db, ref)
        for item in items:
            if current(db, item["id"]) is not None:
                continue
            hold_id = db.execute("INSERT INTO legal_holds (item, reason, held_by, held_at) VALUES (?,?,?,?)",
                                 (item["id"], reason, by, at)).lastrowid
            assert hold_id is not None
            made.append(Hold(hold_id, item["id"], item["item_id"], reason, by, at))
            append_audit(db, by, f"item hold {item['id']} ({item['item_id'] or 'no id'})"
                                 + (f": {reason}" if reason else ""), at)
        if not made:
            held = current(db, items[0]["id"])
            assert held is not None
            raise HoldError(f"{ref}: held already, by {held.held_by} since {_day(held.held_at)}")
    return made


def release(store: Store, ref: str, *, by: str, now: float | None = None) -> list[Hold]:
    """Take the legal hold off every item `ref` names; retention may delete them again by its rules.
    HoldError, and nothing stored, when `ref` names no item or none of them is held."""
    at = time.time() if now is None else now
    released: list[Hold] = []
    with store.transaction() as db:
        for item in _items(db, ref):
            held = current(db, item["id"])
            if held is None:
                continue
            db.execute("UPDATE legal_holds SET released_by = ?, released_at = ? WHERE id = ?", (by, at, held.id))
            released.append(Hold(held.id, held.item, held.item_id, held.reason, held.held_by, held.held_at, by, at))
            append_audit(db, by, f"item release {item['id']} ({item['item_id'] or 'no id'})", at)
        if not released:
            raise HoldError(f"{ref}: no legal hold on it")
    return released


def current(db: sqlite3.Connection, item: int) -> Hold | None:
    """The legal hold in force on items.id `item`, if any."""
    rows = _rows(db, "WHERE h.item = ? AND h.released_at IS NULL", (item,))
    return rows[0] if rows else None


def holds(db: sqlite3.Connection, *, released: bool = False) -> list[Hold]:
    """The holds in force (and, with `released`, those taken off too), oldest first."""
    return _rows(db, "" if released else "WHERE h.released_at IS NULL", ())


def _rows(db: sqlite3.Connection, where: str, params: tuple[object, ...]) -> list[Hold]:
    rows = db.execute("SELECT h.id, h.item, i.item_id, h.reason, h.held_by, h.held_at, h.released_by, h.released_at"
                      f" FROM legal_holds AS h JOIN items AS i ON i.id = h.item {where} ORDER BY h.id", params)
    return [Hold(*row) for row in rows]


def _items(db: sqlite3.Connection, ref: str) -> list[sqlite3.Row]:
    items = find_items(db, ref)
    if not items:
        raise HoldError(f"{ref}: no stored item has this id (store id, S10 id, scan id, barcode or uid)")
    return items


def _reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise HoldError(f"the reason has {len(reason)} characters: at most {MAX_REASON}")
    if any(not c.isprintable() for c in reason):
        raise HoldError("the reason holds a control character")
    return reason


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
