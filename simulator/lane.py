"""The whole simulated lane: belt + PLC server, scanner and barcode reader on ptys, images, EAD.

`SimLane` is an async context manager. Inside it, a Modbus TCP server, two pseudo-terminals and a
spool folder behave like the lane's hardware; the station talks to them through its real drivers.
The simulator keeps the ground truth (what each item is and which bin it ended in) for scoring.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from drivers.xde import MAGIC, encode_xde
from simulator import belt as b
from simulator.central import CentralFeed
from simulator.faults import COUNTED, Fault
from simulator.plc import SimPlc
from simulator.serial_devices import SimBarcode, SimScanner
from simulator.stream import ItemStream, SimTruth
from simulator.xray import synth_parcel
from station.config import LaneSection, SimulatorSection

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    truth: SimTruth
    bin: str | None = None  # None: never reached the gate
    routed_at: float | None = None  # time.time() when it reached the gate
    faults: list[str] = field(default_factory=list)  # injected faults that hit this item


LATE_EAD_S = 0.5  # a late declaration reaches central this long after its item passed the gate
CLOSE_GAP_MM = 10.0  # the `close` fault's gap: less than any gate can separate
DISK_FULL_LIMIT = 4 * 2**30  # `disk-full` refuses a filesystem with more free than this: it would fill a real disk

class SimLane:
    def __init__(self, sim: SimulatorSection, lane: LaneSection, workdir: Path, *, plc_port: int = 0,
                 max_items: int | None = None, ead_items: int = 10_000, profile: str = "default",
                 central: CentralFeed | None = None, first_item: int = 0, truth_file: Path | None = None) -> None:
        self.config = sim
        self.central = central  # EAD over MQTT, as central sends it; None: an EAD file for the station to import
        self.geometry = b.Geometry(barcode_mm=lane.barcode_mm, tunnel_start_mm=lane.tunnel_start_mm,
                                   tunnel_end_mm=lane.tunnel_end_mm, gate_mm=lane.gate_mm, scale_mm=lane.scale_mm)
        self.workdir = workdir
        self.spool_dir = workdir / "spool"
        self.ead_file = workdir / "ead.jsonl"
        self.plc_port = plc_port
        self.profile = profile  # the PLC program's register map (the station must use the same)
        self.max_items = max_items
        self.ead_items = max_items if max_items is not None else ead_items
        self.first_item = first_item  # the stream's first index: a restarted simulator feeds new items
        self.truth_file = truth_file  # the ground truth as it happens, for a scorer in another process
        self.feeding = True
        self.stream = ItemStream(sim)
        self.belt = b.Belt(self.geometry)
        self.outcomes: dict[int, Outcome] = {}
        self.routed = 0
        self.all_routed = asyncio.Event()
        self._renders: dict[int, asyncio.Future[bytes]] = {}
        self._serial_jobs: asyncio.Queue[tuple[str, b.SimItem]] = asyncio.Queue()
        self._pending: Counter[str] = Counter()  # counted faults still to apply
        self._bad_images = 0  # image-corrupt faults applied so far: they take the kinds of bad file in turn
        self.noise_rate = 0  # random bytes per second on the scanner line
        self._outages: list[float] = []  # link outages (s) waiting for the next item at the entry eye
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> SimLane:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        if self.central is None:
            self._write_ead()
        else:
            await self._stack.enter_async_context(self.central)
        self.plc = await self._stack.enter_async_context(
            SimPlc(self.belt, port=self.plc_port, on_events=self._on_events, profile=self.profile))
        # by stable names, as udev gives them: a device unplugged and plugged back is found at the same path
        self.scanner = await self._stack.enter_async_context(SimScanner(link=self.workdir / "scanner"))
        self.barcode = await self._stack.enter_async_context(SimBarcode(link=self.workdir / "barcode"))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._feed()), loop.create_task(self._serial()),
                       loop.create_task(self._line_noise())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._renders.values(), return_exceptions=True)
        await self._stack.aclose()

    @property
    def endpoints(self) -> dict[str, object]:
        return {
            "plc": {"host": "127.0.0.1", "port": self.plc.port},
            "scanner": self.scanner.path,
            "barcode": self.barcode.path,
            "spool_dir": str(self.spool_dir),
            "ead": str(self.ead_file) if self.central is None else f"mqtt {self.central.topic}",
        }

    # ---- fault injection ----------------------------------------------------------------------

    async def inject(self, fault: Fault) -> None:
        """Apply a fault now (see simulator/faults.py for what each one does)."""
        log.warning("simulator: injecting fault %s=%d", fault.name, fault.arg)
        name, arg = fault.name, fault.arg
        if name in COUNTED:
            self._pending[name] += arg
        elif name == "estop":
            self.plc.press_estop()
        elif name == "estop-release":
            self.plc.release_estop()
        elif name in ("interlock-open", "interlock-close"):
            await self.scanner.interlock(name == "interlock-open")
        elif name == "plc-drop":
            await self.plc.drop_link()
        elif name == "plc-restore":
            await self.plc.restore_link()
        elif name == "plc-silent":
            self.plc.set_silent(bool(arg))
        elif name == "plc-exception":
            self.plc.set_exception(arg)
        elif name == "plc-slow":
            self.plc.set_delay(arg / 1000)
        elif name == "plc-write-lag":
            self.plc.set_write_lag(arg / 1000)
        elif name == "outage-at-entry":
            self._outages.append(arg / 1000)
        elif name == "encoder-wrap":
            self.plc.shift_encoder((2**32 - arg - self.plc.program.encoder) % 2**32)
        elif name == "encoder-jump":
            self.plc.shift_encoder(-arg)
        elif name == "disk-full":
            await asyncio.to_thread(fill_disk, self.workdir / "disk-filler", arg * 1024)
        elif name == "serial-noise-rate":
            self.noise_rate = arg
        elif name == "serial-noise":
            self.scanner.noise_bytes_per_frame = arg
        elif name == "split-frames":
            self.scanner.split_writes = bool(arg)
        elif name in ("scanner-unplug", "barcode-unplug"):
            device = self.scanner if name == "scanner-unplug" else self.barcode
            await (device.unplug() if arg else device.replug())

    def _take(self, name: str, item: b.SimItem) -> bool:
        """Consume one pending counted fault for this item."""
        if self._pending[name] <= 0:
            return False
        self._pending[name] -= 1
        self.outcomes[item.index].faults.append(name)
        return True

    async def _line_noise(self, tick: float = 0.02) -> None:
        """Noise on the scanner's line at `noise_rate` bytes/s (between frames: the device's writes are atomic)."""
        rng = np.random.default_rng([self.config.seed, 4_000_037])
        while True:
            await asyncio.sleep(tick)
            count = int(rng.poisson(self.noise_rate * tick)) if self.noise_rate else 0
            if count:
                await self.scanner.send_raw(rng.bytes(count))

    def _write_ead(self) -> None:
        with self.ead_file.open("w", encoding="utf-8") as out:
            for index in range(self.first_item, self.first_item + self.ead_items):
                record = self.stream.ead_record(self.stream.item(index))
                if record is not None:
                    out.write(json.dumps(record) + "\n")

    # ---- items onto the belt ------------------------------------------------------------------

    async def _feed(self) -> None:
        """Induct items at the configured rate, as space on the belt allows, while the belt runs."""
        rng = np.random.default_rng([self.config.seed, 1_000_003])
        index = self.first_item
        while self.max_items is None or index < self.first_item + self.max_items:
            pause = float(rng.exponential(0.25 / self.config.item_rate_per_s)) + 0.75 / self.config.item_rate_per_s
            if not (self._pending["touching"] or self._pending["close"]):
                await asyncio.sleep(pause)  # a touching or close item follows the one before it at once
            truth = self.stream.item(index)
            item = b.SimItem(index=index, length_mm=truth.length_mm, weight_kg=truth.weight_kg, payload=truth)
            self.outcomes[index] = Outcome(truth)
            gap = 0.0 if self._take("touching", item) else CLOSE_GAP_MM if self._take("close", item) else None
            while not (self.feeding and self.belt.running and self._place(item, gap)):
                await asyncio.sleep(0.002 if gap is not None else 0.01)
            self._tell_truth({"event": "placed", "index": index, "scan_id": truth.scan_id, "barcode": truth.barcode,
                              "threats": list(truth.threats), "faults": self.outcomes[index].faults})
            if self.central is not None and not truth.ead_late and (record := self.stream.ead_record(truth)):
                await self.central.send(record)  # central has it before the item reaches the reader
            index += 1

    def _place(self, item: b.SimItem, gap_mm: float | None) -> bool:
        """Put `item` on the belt: the feeder's usual gap, or `gap_mm` behind the item before it."""
        if gap_mm is None:
            return self.belt.place(item)
        last = self.belt.items[-1] if self.belt.items else None
        if last is not None and last.trail_mm < self.geometry.feed_mm:
            return False  # wait until the previous item has moved off the feed point, then close up to it
        if last is not None and last.trail_mm > self.geometry.feed_mm + self.belt.min_gap_mm:
            last = None  # it has gone too far to close up to: this one starts at the feed point
        usual, self.belt.min_gap_mm = self.belt.min_gap_mm, 0.0
        try:
            placed = self.belt.place(item)
        finally:
            self.belt.min_gap_mm = usual
        if placed and last is not None:
            item.lead_mm = last.trail_mm - gap_mm
        return placed

    def _on_events(self, events: list[b.BeltEvent]) -> None:
        for ev in events:
            if isinstance(ev, b.Entered) and self._outages:
                self.outcomes[ev.item.index].faults.append("outage-at-entry")
                self.plc.set_silent(True)  # from the moment its leading edge reaches the eye
                asyncio.get_running_loop().call_later(self._outages.pop(0), self.plc.set_silent, False)
            elif isinstance(ev, b.EnteredTunnel):
                truth: SimTruth = ev.item.payload  # type: ignore[assignment]
                self._renders[ev.item.index] = asyncio.ensure_future(asyncio.to_thread(self._render, truth))
                self._serial_jobs.put_nowait(("scan_started", ev.item))
            elif isinstance(ev, b.LeftTunnel):
                if self._take("jam", ev.item):
                    # It sticks on a side guide after the tunnel: gone from the belt, never at the gate.
                    asyncio.get_running_loop().call_later(0.1, self.belt.remove, ev.item)
                self._serial_jobs.put_nowait(("scan_done", ev.item))
            elif isinstance(ev, b.ReachedBarcode):
                self._serial_jobs.put_nowait(("barcode", ev.item))
            elif isinstance(ev, b.Routed):
                outcome = self.outcomes[ev.item.index]
                outcome.bin, outcome.routed_at = ev.bin, time.time()
                self._tell_truth({"event": "routed", "index": ev.item.index, "bin": ev.bin,
                                  "routed_at": outcome.routed_at, "faults": outcome.faults})
                self.routed += 1
                truth = ev.item.payload  # type: ignore[assignment]
                if self.central is not None and truth.ead_late and (record := self.stream.ead_record(truth)):
                    self.central.send_later(record, LATE_EAD_S)  # after the station has stored the item
                if self.max_items is not None and self.routed >= self.max_items:
                    self.all_routed.set()

    async def _serial(self) -> None:
        """Serial traffic in the order the belt caused it (one task, so a scan's start precedes its end)."""
        while True:
            kind, item = await self._serial_jobs.get()
            truth: SimTruth = item.payload  # type: ignore[assignment]
            if kind == "barcode":
                await self.barcode.send(None if self._take("noread", item) else truth.barcode)
            elif kind == "scan_started":
                await self.scanner.scan_started(truth.scan_id)
            else:
                data = await self._renders.pop(item.index)
                if self._take("scanner-silent", item):
                    continue
                name = f"{truth.scan_id}.xde"
                if self._take("image-corrupt", item):
                    data = bad_image(self._bad_images, data)
                    self._bad_images += 1
                if not self._take("image-missing", item):
                    self._spool(name, data)
                await self.scanner.scan_done(truth.scan_id, name, hashlib.sha256(data).hexdigest())

    def _tell_truth(self, line: dict[str, object]) -> None:
        if self.truth_file is not None:
            with self.truth_file.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")

    def _spool(self, name: str, data: bytes) -> None:
        """Write a scan into the spool whole or not at all; a full disk loses it, as a real export would."""
        tmp = self.spool_dir / f".{name}.part"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, self.spool_dir / name)
        except OSError as err:
            log.warning("simulated scanner: cannot write %s: %s", name, err)
            tmp.unlink(missing_ok=True)

    def _render(self, truth: SimTruth) -> bytes:
        rng = np.random.default_rng([self.config.seed, truth.index, 2])
        scan = synth_parcel(rng, truth.threats)
        data = encode_xde(scan.high, scan.low, {"scan_id": truth.scan_id})
        if truth.image_fault:
            data = data[: len(data) // 3]  # a transfer cut short: the station must route it to INSPECT
        return data


BAD_IMAGES = ("truncated", "empty", "huge header", "wrong content")


def bad_image(k: int, good: bytes) -> bytes:
    """The k-th bad image file (kinds in turn, see BAD_IMAGES) in place of a good .xde scan:
    a transfer cut short, a 0-byte file, a header declaring 60,000 x 60,000 pixels (a decompression
    bomb), and a PNG written under the .xde name."""
    kind = BAD_IMAGES[k % len(BAD_IMAGES)]
    if kind == "truncated":
        return good[: len(good) // 3]
    if kind == "empty":
        return b""
    if kind == "huge header":
        header = json.dumps({"width": 60000, "height": 60000, "planes": ["high", "low"], "dtype": "uint16"}).encode()
        return MAGIC + len(header).to_bytes(4, "little") + header + good[-4096:]
    ok, png = cv2.imencode(".png", np.full((32, 32), 200, np.uint8))
    assert ok
    return png.tobytes()


def fill_disk(filler: Path, leave_bytes: int) -> None:
    """Grow `filler` until its filesystem has `leave_bytes` free (0: remove it). Refuses a filesystem with
    more than DISK_FULL_LIMIT free: the fault is for a data folder on a small filesystem (a tmpfs)."""
    if leave_bytes <= 0:
        filler.unlink(missing_ok=True)
        log.warning("simulator: disk filler removed")
        return
    st = os.statvfs(filler.parent)
    free = st.f_bavail * st.f_frsize
    if free > DISK_FULL_LIMIT:
        log.error("simulator: disk-full refused: %s has %.1f GiB free; put the data folder on a small "
                  "filesystem (e.g. a tmpfs) to simulate a full disk", filler.parent, free / 2**30)
        return
    chunk = bytes(2**20)
    with filler.open("ab") as out:
        while (free := _free(filler.parent)) > leave_bytes:
            try:
                out.write(chunk[: min(len(chunk), free - leave_bytes)])
                out.flush()
            except OSError:  # full already: that is the point
                break
    log.warning("simulator: disk filled, %d KiB left on %s", _free(filler.parent) // 1024, filler.parent)


def _free(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize
