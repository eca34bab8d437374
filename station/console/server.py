"""The console's place in the daemon: one uvicorn server on the daemon's loop, in its TaskGroup.

The socket is bound before the lane starts (a port in use stops the start with a clear error, as a
missing serial device does). Everything slow happens off the loop that runs the lane: store reads on
one reader thread with its own WAL connection, image rendering on a small pool. Writes go through the
daemon's one store writer (station/writer.py), so the verdict's row, its outbox message and its audit
row reach the store in order with everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from drivers.barcode import BarcodeStats
from drivers.scanner import ScannerStats
from station.config import LaneSection, WebSection
from station.control import ControlServer
from station.lane.status import StatusBoard
from station.metrics import LaneMetrics
from station.mqtt_link import Topics
from station.store import Store
from station.writer import StoreWriter

log = logging.getLogger(__name__)

T = TypeVar("T")


class ConsoleError(Exception):
    """The console cannot be served as configured (the message says why)."""


BACKGROUND_NICE = 10  # the console's threads yield the CPU to the lane's: the loop, the writer, inference


def background_thread() -> None:
    """A pool thread's initializer: lower this thread's priority (Linux: niceness is per thread, and the
    threads a library starts from it, argon2's lanes, inherit it)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except OSError as err:  # not fatal: the console is then as urgent as the lane's own threads
        log.warning("console thread priority not lowered: %s", err)


def background_pool(threads: int, name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix=name, initializer=background_thread)


class Reader:
    """Store reads on one thread with its own connection, so the lane's loop never waits on a query.

    `background`: the thread runs at a lower priority, for work that holds no lock the loop needs while it
    computes (a login's argon2 hash runs in C without the GIL); a thread that holds the GIL in between
    must not be niced, or any other busy process on the box could keep the loop waiting for it."""

    def __init__(self, path: Path, *, background: bool = False, name: str = "console-read") -> None:
        self.path = path
        self._pool = background_pool(1, name) if background else ThreadPoolExecutor(1, thread_name_prefix=name)
        self._local = threading.local()

    async def __call__(self, job: Callable[[Store], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, job)

    def _run(self, job: Callable[[Store], T]) -> T:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store(self.path)
        result: T = job(store)
        if store.db.in_transaction:  # a read never keeps a snapshot open: the writer's checkpoints need it
            store.db.execute("ROLLBACK")
        return result

    def close(self) -> None:
        def close_here() -> None:
            store = getattr(self._local, "store", None)
            if store is not None:
                store.close()
        self._pool.submit(close_here)
        self._pool.shutdown(wait=True)


@dataclass
class LaneAccess:
    """What the console may reach of the running lane: snapshots to read, and the control channel's
    checked and audited actions (the same ones `station lane|alarm|model|diag plc write` use)."""

    board: StatusBoard
    control: ControlServer
    writer: StoreWriter
    topics: Topics
    lane: LaneSection
    notify: Callable[[], None]  # the outbox has news (central.notify)
    registers: Callable[[], Mapping[str, object]]  # the PLC poller's latest values, by profile name
    frames: Callable[[], Mapping[str, list[tuple[float, str, str]]]]  # recent decoded frames per reader
    threat_classes: Callable[[], tuple[str, ...]]
    # for /metrics (station/metrics.py); without `lane_metrics` the console serves none
    lane_metrics: LaneMetrics | None = None  # the runtime's latency histograms
    serial: Callable[[], Mapping[str, ScannerStats | BarcodeStats]] = dict  # the serial drivers' frame counters
    rules_version: Callable[[], str] = lambda: "-"
    min_free_bytes: int = 0  # storage.min_free_mb, in bytes


def bind(web: WebSection, *, any_port: bool = False) -> socket.socket:
    """The console's listening socket, or ConsoleError naming the address. With `any_port` (the simulated
    lane on a laptop) a port in use gives way to a free one: the URL printed at the start says which."""
    try:
        return _listen(web.host, web.port)
    except OSError as err:
        if not (any_port and err.errno == errno.EADDRINUSE):
            raise ConsoleError(f"[web] {web.host}:{web.port}: cannot listen: {err.strerror or err}") from err
    log.warning("[web] port %d is in use; the simulated lane's console takes a free port", web.port)
    return _listen(web.host, 0)


def _listen(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on connections of such a listener, and
    # without it a response's body waits ~40 ms for the client's delayed ACK of its headers (Nagle).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def tls_context(web: WebSection) -> ssl.SSLContext | None:
    if web.tls_cert is None or web.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(web.tls_cert, web.tls_key)
    except (OSError, ssl.SSLError) as err:
        raise ConsoleError(f"[web] tls_cert {web.tls_cert} / tls_key {web.tls_key}: {err}") from err
    return context


def url_of(web: WebSection, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if web.tls_cert else "http"
    shown = "[" + host + "]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/"


class _Server(uvicorn.Server):
    """uvicorn on the daemon's loop: the daemon, not uvicorn, owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: Any, sock: socket.socket, web: WebSection) -> None:
    """Serve `app` on `sock` until cancelled; then close the listener and every connection."""
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", proxy_headers=False,
                            server_header=False, date_header=True, timeout_graceful_shutdown=1,
                            h11_max_incomplete_event_size=64 * 1024)
    config.load()
    config.ssl = tls_context(web)  # after load(), which would make its own from paths
    server = _Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = server.force_exit = True  # open event streams do not hold the stop
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        raise
