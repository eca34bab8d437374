"""The station's Prometheus metrics: what `/metrics` on the console's server says (docs: README "Monitoring").

A scrape reads what the lane already publishes and touches no device: the lane's status snapshot
(`station.lane.status.LaneStatus`, the one every reader reads), the few histograms the lane fills as
things happen (`LaneMetrics`), the serial drivers' frame counters (in memory), and, on the console's
reader thread (never on the loop, never the store's writer), two store facts and the disk's free space.
Each station has a registry of its own, so two stations in one process never share a series.

Metric (type; labels): where it comes from
- station_up (gauge): 1 once the lane has published its status snapshot (0 while it starts)
- station_build_info (gauge; version): 1, the software version (`station --version`)
- station_lane_state (gauge; state): 1 for the lane's state (STOPPED RUNNING PAUSED FAULT ESTOP MAINTENANCE), 0 others
- station_lane_manual_only (gauge): 1 while no usable model decides (every item to INSPECT); snapshot
- station_model_info (gauge; name, version, hash): 1 for the model in use, absent while MANUAL_ONLY; snapshot
- station_rules_info (gauge; version): 1 for the rule set in use; the runtime
- station_items_total (counter; decision): items this run stored, CLEAR and INSPECT; snapshot's counters
- station_inspect_reasons_total (counter; reason): INSPECT items this run stored that carried the reason
  (an item counts under each of its reasons); snapshot's counters
- station_items_on_belt (gauge): items the station follows now; snapshot
- station_decision_latency_seconds (histogram): image file ready -> decision, per item stored; LaneMetrics
- station_inference_seconds (histogram): detections asked -> had, per image that got them; LaneMetrics
- station_inference_failures_total (counter; reason): images without detections (IMAGE_ERROR, ...); detector health
- station_plc_round_trip_seconds (histogram): one full PLC poll, every register group read; LaneMetrics (driver hook)
- station_plc_errors_total (counter; kind): connect / link / timeout; PLC health in the snapshot
- station_serial_frames_total (counter; device): frames decoded (scanner), lines read (barcode); the drivers
- station_serial_noise_total (counter; device, kind): what was not a frame (checksum, syntax, garbage, ...); the drivers
- station_device_up (gauge; device): 1 when the device is usable (up or degraded); snapshot
- station_device_state (gauge; device, state): 1 for the device's state (connecting up degraded down); snapshot
- station_device_last_success_timestamp_seconds (gauge; device): its last good exchange; snapshot
- station_outbox_messages (gauge): messages waiting for the broker; snapshot (the runtime reads it every 0.25 s)
- station_outbox_oldest_age_seconds (gauge): how long the oldest has waited, 0 when empty; snapshot
- station_outbox_published_total (counter): messages this run published; snapshot
- station_store_pending_writes (gauge): writes queued for the store's writer; snapshot
- station_ead_records (gauge): declarations in the local cache; the store, reader thread
- station_ead_lag_seconds (gauge): since the newest declaration was received; the store, reader thread
- station_alarms_active (gauge; code): 1 per active alarm; snapshot
- station_disk_free_bytes (gauge): free space of the data folder's filesystem; reader thread
- station_disk_min_free_bytes (gauge): `storage.min_free_mb`, below which the lane pauses; the configuration
- station_process_* (prometheus_client's process collector): memory, CPU, open files of the daemon

Labels come from short fixed vocabularies (decisions, states, devices, reason, alarm and error codes):
no item id, S10 id or file name is ever a label. The site and the lane are the scrape's target labels
(deploy/prometheus-rules.yml says how), so `up` and every station_* series of one lane carry the same.
"""

from __future__ import annotations

import bisect
import logging
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from drivers.barcode import BarcodeStats
from drivers.health import HealthState
from drivers.scanner import ScannerStats
from station.domain import ReasonCode
from station.lane.core import LaneState
from station.lane.status import LaneStatus, StatusBoard
from station.store import Store
from station.version import VERSION

log = logging.getLogger(__name__)

# Buckets around the design's budgets (bench/ measures them): decision p99 <= 150 ms, inference p50 <= 25 ms
# (the per-image timeout is seconds), a PLC poll every 20 ms with a 0.5 s timeout.
DECISION_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0)
INFERENCE_BUCKETS = (0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PLC_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

# Every family a scrape can carry, with its type (tests check the scrape and the dashboard against it).
METRICS: Mapping[str, str] = {
    "station_up": "gauge", "station_build_info": "gauge", "station_lane_state": "gauge",
    "station_lane_manual_only": "gauge", "station_model_info": "gauge", "station_rules_info": "gauge",
    "station_items_total": "counter", "station_inspect_reasons_total": "counter", "station_items_on_belt": "gauge",
    "station_decision_latency_seconds": "histogram", "station_inference_seconds": "histogram",
    "station_inference_failures_total": "counter", "station_plc_round_trip_seconds": "histogram",
    "station_plc_errors_total": "counter", "station_serial_frames_total": "counter",
    "station_serial_noise_total": "counter", "station_device_up": "gauge", "station_device_state": "gauge",
    "station_device_last_success_timestamp_seconds": "gauge", "station_outbox_messages": "gauge",
    "station_outbox_oldest_age_seconds": "gauge", "station_outbox_published_total": "counter",
    "station_store_pending_writes": "gauge", "station_ead_records": "gauge", "station_ead_lag_seconds": "gauge",
    "station_alarms_active": "gauge", "station_disk_free_bytes": "gauge", "station_disk_min_free_bytes": "gauge",
}
PROCESS_PREFIX = "station_process_"


class Buckets:
    """One histogram's cumulative buckets, filled on the loop (no lock: nothing else writes it)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.count, self.sum = 0, 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # a value on a bound is in that bound's bucket
        self.count += 1
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.sum)


class LaneMetrics:
    """What can only be measured as it happens: the lane calls these (on its loop) and a scrape reads them."""

    def __init__(self) -> None:
        self.decision_latency = Buckets(DECISION_BUCKETS)
        self.inference = Buckets(INFERENCE_BUCKETS)
        self.plc_round_trip = Buckets(PLC_BUCKETS)

    def decided(self, latency_ms: float | None) -> None:
        """An item was stored; its decision latency, if it was measured (it has an image)."""
        if latency_ms is not None:
            self.decision_latency.observe(latency_ms / 1000)

    def inferred(self, seconds: float) -> None:
        self.inference.observe(seconds)

    def polled(self, seconds: float) -> None:
        self.plc_round_trip.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        yield self.decision_latency.family(
            "station_decision_latency_seconds",
            "Time from an item's image file being ready to its CLEAR/INSPECT decision, per item stored "
            "(items decided without an image are not in it). Budget: p99 under 0.15 s.")
        yield self.inference.family(
            "station_inference_seconds",
            "Time from asking for an image's detections to having them (read and check the file, decode, run "
            "the model; any wait behind the image before it), per image that got them. Budget: p50 under 0.025 s.")
        yield self.plc_round_trip.family(
            "station_plc_round_trip_seconds",
            "Time one full PLC poll took (every register group read once, a retried read included), per answered poll.")


@dataclass(frozen=True)
class StoredFacts:
    """What a scrape reads off the loop: the EAD cache (from the store) and the data folder's disk."""

    ead_records: int
    ead_newest_at: float | None  # time.time() the newest declaration was received
    disk_free_bytes: int


def stored_facts(store: Store, data_dir: Path) -> StoredFacts:
    """Blocking: run it on the console's reader thread."""
    records, newest = store.ead_stats()
    return StoredFacts(records, newest, shutil.disk_usage(data_dir).free)


Serial = Callable[[], Mapping[str, ScannerStats | BarcodeStats]]
Read = Callable[[Callable[[Store], StoredFacts]], Awaitable[StoredFacts]]


class StationCollector(Collector):
    """Builds every station_* family at scrape time, from the snapshot and the counters the lane keeps."""

    def __init__(self, board: StatusBoard, lane: LaneMetrics, *, serial: Serial, rules_version: Callable[[], str],
                 min_free_bytes: int) -> None:
        self.board, self.lane, self.serial = board, lane, serial
        self.rules_version, self.min_free_bytes = rules_version, min_free_bytes
        self.stored: StoredFacts | None = None  # the scrape's store facts, read just before it (None: unreadable)

    def collect(self) -> Iterator[Metric]:
        status = self.board.current
        yield _gauge("station_up", "1 once the lane publishes its status (the daemon runs its lane), 0 while it "
                     "starts.", int(status is not None))
        yield _gauge("station_build_info", "The station software's version (station --version).", 1,
                     version=VERSION)
        yield _gauge("station_rules_info", "The risk rule set the lane decides with.", 1, version=self.rules_version())
        yield _gauge("station_disk_min_free_bytes", "storage.min_free_mb: below this much free space the lane pauses.",
                     self.min_free_bytes)
        if status is not None:
            yield from _lane(status)
            yield from _devices(status)
        yield from self.lane.collect()
        yield from _serial(self.serial())
        if self.stored is not None:
            yield from _stored(self.stored, time.time())


def _gauge(name: str, documentation: str, value: float, /, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _lane(s: LaneStatus) -> Iterator[Metric]:
    state = GaugeMetricFamily("station_lane_state", "1 for the lane's state now, 0 for the others.", labels=["state"])
    for name in LaneState:
        state.add_metric([name.value], float(s.state == name.value))
    yield state
    yield _gauge("station_lane_manual_only", "1 while no usable model decides: every item goes to INSPECT.",
                 int(s.manual_only))
    if s.model is not None:
        yield _gauge("station_model_info", "The detection model in use (absent while MANUAL_ONLY); hash: the pin every "
                     "item records.", 1, name=s.model.name, version=s.model.version, hash=s.model.hash)
    items = CounterMetricFamily("station_items_total", "Items this run stored, by decision.", labels=["decision"])
    items.add_metric(["CLEAR"], s.counters.cleared)
    items.add_metric(["INSPECT"], s.counters.inspected)
    yield items
    reasons = CounterMetricFamily(
        "station_inspect_reasons_total", "INSPECT items this run stored that carried the reason code (an item counts "
        "under each of its reasons, so these add up to more than the INSPECT items).", labels=["reason"])
    counted: dict[str, int] = {**dict.fromkeys(map(str, ReasonCode), 0), **dict(s.counters.by_reason)}
    for code, count in sorted(counted.items()):
        reasons.add_metric([str(code)], count)
    yield reasons
    yield _gauge("station_items_on_belt", "Items the station follows between the entry eye and the gate now.",
                 len(s.on_belt))
    yield _gauge("station_outbox_messages", "Messages waiting in the outbox for the broker.", s.outbox.depth)
    yield _gauge("station_outbox_oldest_age_seconds", "How long the oldest message in the outbox has waited "
                 "(0: empty).", s.outbox.oldest_age_s(time.time()) or 0.0)
    yield CounterMetricFamily("station_outbox_published", "Messages this run published to the broker (acknowledged).",
                              s.outbox.published)
    yield _gauge("station_store_pending_writes", "Writes queued for the store's writer thread.", s.store_pending)
    alarms = GaugeMetricFamily("station_alarms_active", "1 per active alarm (raised, not cleared), by code.",
                               labels=["code"])
    for alarm in s.alarms:
        alarms.add_metric([alarm.code], 1)
    yield alarms


def _devices(s: LaneStatus) -> Iterator[Metric]:
    up = GaugeMetricFamily("station_device_up", "1 when the device is usable (up or degraded), 0 when connecting "
                           "or down.", labels=["device"])
    state = GaugeMetricFamily("station_device_state", "1 for the device's health state now, 0 for the others.",
                              labels=["device", "state"])
    last = GaugeMetricFamily("station_device_last_success_timestamp_seconds", "Unix time of the device's last good "
                             "exchange.", labels=["device"])
    for d in s.devices:
        up.add_metric([d.device], float(d.state in (HealthState.UP, HealthState.DEGRADED)))
        for health in HealthState:
            state.add_metric([d.device, health.value], float(d.state == health.value))
        if d.last_success is not None:
            last.add_metric([d.device], d.last_success)
    yield from (up, state, last)
    plc, detector = s.device("plc"), s.device("detector")
    errors = CounterMetricFamily("station_plc_errors_total", "PLC link errors by kind (connect, link, timeout).",
                                 labels=["kind"])
    for kind, count in plc.errors if plc else ():
        errors.add_metric([kind], count)
    yield errors
    failures = CounterMetricFamily("station_inference_failures_total", "Images that got no detections, by reason "
                                   "(the item went to INSPECT).", labels=["reason"])
    for reason, count in detector.errors if detector else ():
        failures.add_metric([reason], count)
    yield failures


def _serial(stats: Mapping[str, ScannerStats | BarcodeStats]) -> Iterator[Metric]:
    frames = CounterMetricFamily("station_serial_frames_total", "Frames decoded (scanner) and lines read (barcode, "
                                 "no-reads included) on the serial lines.", labels=["device"])
    noise = CounterMetricFamily("station_serial_noise_total", "What arrived on a serial line and was not a good "
                                "frame or line, by kind (checksum, syntax, garbage, too_long, invalid).",
                                labels=["device", "kind"])
    for device, st in sorted(stats.items()):
        if isinstance(st, ScannerStats):
            frames.add_metric([device], st.frames_ok)
            kinds = st.frame_errors
        else:
            frames.add_metric([device], st.reads + st.no_reads)
            kinds = st.errors
        for kind, count in sorted(kinds.items()):
            noise.add_metric([device, kind], count)
    yield from (frames, noise)


def _stored(facts: StoredFacts, now: float) -> Iterator[Metric]:
    yield _gauge("station_ead_records", "Declarations (EAD) in the station's local cache.", facts.ead_records)
    if facts.ead_newest_at is not None:
        yield _gauge("station_ead_lag_seconds", "EAD lag: seconds since the newest declaration was received (from "
                     "central or a file), i.e. how far the cache may be behind its feed.",
                     round(max(0.0, now - facts.ead_newest_at), 3))
    yield _gauge("station_disk_free_bytes", "Free space of the data folder's filesystem.", facts.disk_free_bytes)


class StationMetrics:
    """One station's registry and its scrape."""

    def __init__(self, board: StatusBoard, lane: LaneMetrics, *, data_dir: Path, serial: Serial,
                 rules_version: Callable[[], str], min_free_bytes: int) -> None:
        self.data_dir = data_dir
        self.registry = CollectorRegistry()
        self.collector = StationCollector(board, lane, serial=serial, rules_version=rules_version,
                                          min_free_bytes=min_free_bytes)
        self.registry.register(self.collector)
        ProcessCollector(namespace="station", registry=self.registry)

    async def scrape(self, read: Read) -> bytes:
        """The text exposition: store facts read on `read`'s thread, then the families built on the loop
        (a few hundred lines, no I/O besides the process collector's /proc reads)."""
        try:
            stored: StoredFacts | None = await read(lambda store: stored_facts(store, self.data_dir))
        except (sqlite3.Error, OSError) as err:  # the scrape still says everything else
            log.warning("metrics: the store's facts not read: %s", err)
            stored = None
        self.collector.stored = stored  # no await from here to the text: no other scrape can interleave
        return generate_latest(self.registry)
