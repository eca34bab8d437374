"""The console's own reads of the store (the review logic itself is station/reviews.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from station import reviews
from station.store import Store


@dataclass(frozen=True)
class Choice:
    """One verdict as the console offers it: its key, its label and what it means."""

    code: str
    key: str
    label: str
    meaning: str


CHOICES = tuple(Choice(code, key, code.replace("_", " ").capitalize(), reviews.VERDICT_MEANINGS[code])
                for key, code in reviews.VERDICT_KEYS.items())


def latest_item(store: Store) -> reviews.ItemView | None:
    """The item stored last, as the item page shows it."""
    row = store.db.execute("SELECT max(id) FROM items").fetchone()
    return None if row[0] is None else reviews.item_view(store, int(row[0]))


def image_path(store: Store, item: int) -> str | None:
    row = store.db.execute("SELECT image_path FROM items WHERE id = ?", (item,)).fetchone()
    return None if row is None else row["image_path"]


def verdict(store: Store, verdict_id: int) -> reviews.Verdict | None:
    row = store.db.execute("SELECT item FROM verdicts WHERE id = ?", (verdict_id,)).fetchone()
    if row is None:
        return None
    view = reviews.item_view(store, int(row["item"]))
    return next((v for v in view.verdicts if v.id == verdict_id), None) if view else None


def alarm_history(store: Store, limit: int) -> list[sqlite3.Row]:
    return store.db.execute("SELECT * FROM alarms ORDER BY id DESC LIMIT ?", (limit,)).fetchall()


def reason_codes(store: Store) -> list[str]:
    return [r[0] for r in store.db.execute("SELECT DISTINCT code FROM item_reasons ORDER BY code")]


@dataclass(frozen=True)
class HistoryFilter:
    """The history page's query, checked: what `reviews.search` takes."""

    s10: str | None = None
    since: float | None = None
    until: float | None = None
    decision: str | None = None
    reason: str | None = None
    verdict: str | None = None
    operator: str | None = None
    before_id: int | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> HistoryFilter:
        """From the page's query string; ValueError names a field that cannot be used."""
        known = {"s10", "since", "until", "decision", "reason", "verdict", "operator", "before"}
        if unknown := sorted(set(query) - known):
            raise ValueError(f"unknown search field {unknown[0]!r}")
        text = {k: v.strip() for k, v in query.items() if v.strip()}
        for key, value in text.items():
            if len(value) > 64:
                raise ValueError(f"{key}: at most 64 characters")
        before = text.get("before")
        if before is not None and not (before.isascii() and before.isdigit() and int(before) < 2**63):
            raise ValueError(f"before {before!r}: an item number")  # SQLite's integers are 64-bit
        return cls(text.get("s10"), _day(text, "since"), _day(text, "until", end=True), text.get("decision"),
                   text.get("reason"), text.get("verdict"), text.get("operator"),
                   int(before) if before is not None else None)

    def kwargs(self) -> dict[str, Any]:
        return {"s10": self.s10, "since": self.since, "until": self.until, "decision": self.decision,
                "reason": self.reason, "verdict": self.verdict, "operator": self.operator,
                "before_id": self.before_id}


def _day(text: Mapping[str, str], key: str, end: bool = False) -> float | None:
    """A YYYY-MM-DD field as local-time Unix seconds: the day's start, or (until) the next day's."""
    value = text.get(key)
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
        start = datetime(day.year, day.month, day.day) + (timedelta(days=1) if end else timedelta())
        return start.timestamp()
    except (ValueError, OverflowError) as err:  # not a date; or 9999-12-31's next day, 0001-01-01 before UTC
        raise ValueError(f"{key} {value!r}: a date, YYYY-MM-DD, from 0001-01-02 to 9999-12-30") from err


def search(store: Store, filters: HistoryFilter, limit: int) -> list[reviews.HistoryRow]:
    return reviews.search(store, **filters.kwargs(), limit=limit)
