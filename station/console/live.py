"""The console's live parts: one Server-Sent Events stream per open page, fed by the lane's snapshots.

The stream waits on the `StatusBoard` (a new `LaneStatus`) and on `Changes` (a verdict, a lock), renders
the fragments its page shows, and sends only those whose HTML changed, as named SSE events that htmx's
SSE extension swaps in. Nothing polls: a quiet lane sends a comment every 15 s to keep proxies from
closing the stream. At most one burst of events per 100 ms per stream, the status board's own pace.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse

from station import reviews
from station.console.auth import Session
from station.console.server import LaneAccess
from station.lane.status import LaneStatus

if TYPE_CHECKING:
    from station.console.app import Console

KEEPALIVE_S = 15.0
PACE_S = 0.2  # at most five bursts a second per stream: the operator sees the belt move, the lane keeps its CPU
T = TypeVar("T")


class Shared:
    """What the streams of one page compute alike, made once: the store's answers and the rendered parts,
    for the snapshot and the changes they were made for (the last few kept)."""

    def __init__(self, most: int = 32) -> None:
        self.most = most
        self._done: OrderedDict[tuple[object, ...], Any] = OrderedDict()
        self._making: dict[tuple[object, ...], asyncio.Future[Any]] = {}

    async def get(self, key: tuple[object, ...], make: Callable[[], Awaitable[T]]) -> T:
        if key in self._done:
            done: T = self._done[key]
            return done
        if key in self._making:  # another stream is making it: wait for the same answer
            made: T = await asyncio.shield(self._making[key])
            return made
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._making[key] = future
        try:
            value = await make()
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: a stream that was not waiting must not log it
            raise
        finally:
            del self._making[key]
        future.set_result(value)
        self._done[key] = value
        while len(self._done) > self.most:
            self._done.popitem(last=False)
        return value


class Changes:
    """A counter that rises with every change the lane's status does not carry (verdicts, locks)."""

    def __init__(self) -> None:
        self.version = 0
        self.closed = False
        self._changed = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        self.closed = True
        self.bump()

    async def newer_than(self, version: int) -> int:
        while self.version <= version:
            await self._changed.wait()
        return self.version


@dataclass(frozen=True)
class BeltItem:
    track_id: int
    item_id: str | None
    position_pct: float  # 0 = entry eye, 100 = gate
    to_gate_s: float | None  # at the belt's set speed, while it runs
    decision: str | None
    armed: bool
    problems: tuple[str, ...]
    decided_at: float | None


def belt(access: LaneAccess, status: LaneStatus | None = None) -> list[BeltItem]:
    status = status or access.board.current
    if status is None:
        return []
    gate, speed = access.lane.gate_mm, access.lane.belt_speed_mm_s
    items = []
    for item in status.on_belt:
        lead = item.lead_mm or 0.0
        to_gate = max(0.0, (gate - lead) / speed) if status.state == "RUNNING" and item.lead_mm is not None else None
        items.append(BeltItem(item.track_id, item.item_id, round(min(100.0, max(0.0, lead / gate * 100)), 1),
                              None if to_gate is None else round(to_gate, 1), item.decision, item.armed,
                              item.problems, item.decided_at))
    return items


def registers(access: LaneAccess) -> list[tuple[str, object]]:
    return sorted(access.registers().items())


def stream(console: Console, request: Request, session: Session) -> StreamingResponse:
    page = request.query_params.get("page", "lane")
    try:
        since = int(request.query_params.get("since", "0"))
    except ValueError:
        since = 0
    return StreamingResponse(_events(console, page, since, session), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _events(console: Console, page: str, since: int, session: Session) -> AsyncIterator[str]:
    board, changes = console.access.board, console.changes
    seq, version, items = -1, -1, -1
    sent: dict[str, str] = {}
    extra: dict[str, Any] = {}
    yield "retry: 2000\n\n"
    while not changes.closed:
        waits = {asyncio.ensure_future(board.newer_than(seq)), asyncio.ensure_future(changes.newer_than(version))}
        try:
            done, _ = await asyncio.wait(waits, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        if not done:
            yield ": quiet lane\n\n"
            continue
        status = board.current
        if status is None:
            continue
        seq, fresh = status.seq, changes.version != version or status.counters.items != items
        version, items = changes.version, status.counters.items
        if fresh:  # an item was stored or judged: what the store says may have changed
            extra = await console.shared.get(("store", page, since if page == "queue" else 0, version, items),
                                             partial(_store_view, console, page, since))
        key = ("html", page, status.seq, session.role, since if page == "queue" else 0, version, items)
        fragments = await console.shared.get(key, partial(_fragments, console, page, status, session, extra))
        for name, html in fragments.items():
            if sent.get(name) != html:
                sent[name] = html
                yield _event(name, html)
        await asyncio.sleep(PACE_S)


async def _store_view(console: Console, page: str, since: int) -> dict[str, Any]:
    if page == "queue":
        return {"pending": await console.read(reviews.pending_count),
                "new": await console.read(lambda store: reviews.count_pending_after(store, since)),
                "locks": console.locks.holders()}
    if page == "lane":
        last, scan = await console.current_item()
        return {"pending": await console.read(reviews.pending_count), "last": last, "scan": scan}
    return {}


async def _fragments(console: Console, page: str, status: LaneStatus, session: Session,
                     extra: Mapping[str, Any]) -> dict[str, str]:
    """The page's live parts for this snapshot. They depend on the session only through its role, so every
    stream of a page and a role shares one rendering (Shared)."""
    env = console.templates.env
    common = {"lane": status, "session": session, "now": time.time(), **extra}
    out = {"lanebar": env.get_template("_lanebar.html").render(common)}
    if page == "lane":
        out["belt"] = env.get_template("_belt.html").render(common, belt=belt(console.access, status))
        out["alarms"] = env.get_template("_alarms.html").render(common)
        out["devices"] = env.get_template("_devices.html").render(common)
        out["last"] = env.get_template("_last.html").render(common)
    elif page == "queue":
        out["queue"] = env.get_template("_queue_news.html").render(common)
    elif page == "technician":
        out["devices"] = env.get_template("_devices.html").render(common, detailed=True)
        out["registers"] = env.get_template("_registers.html").render(common, registers=registers(console.access))
        out["frames"] = env.get_template("_frames.html").render(common, frames=console.access.frames())
        out["alarms"] = env.get_template("_alarms.html").render(common)
    return out


def _event(name: str, html: str) -> str:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {name}\n{data}\n"


def clock(at: float | None) -> str:
    return "—" if at is None else datetime.fromtimestamp(at).strftime("%H:%M:%S")


def when(at: float | None) -> str:
    return "—" if at is None else datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def ago(at: float | None, now: float | None = None) -> str:
    if at is None:
        return "never"
    seconds = max(0.0, (now or time.time()) - at)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return datetime.fromtimestamp(at, UTC).astimezone().strftime("%H:%M")
