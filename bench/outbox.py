"""Benchmark: the outbox drained after a broker outage, against bare paho publishing the same payloads, same run.

The station side is the daemon's own path: a fresh store holding `--messages` outbox rows, written in one
transaction while the broker is down, a `CentralLink` started while nothing listens (it fails and backs
off, as in an outage), then the broker back. Timed from `link.connected` (the reconnect is up) to the
outbox being empty (every message acknowledged and deleted), polled every 5 ms. The rows are what the
recorder queues: an `items/result` per item (`recorder.result_payload` of an `ItemRow`, about 1 KB), and
for one item in ten (INSPECT) its alert's `new` (`alerts.alert_payload`, with the JPEG thumbnail of a
synthetic scan, about 13 KB). The bare side publishes the same payloads with a plain paho client (MQTT 5,
QoS 1, `loop_start()`, the in-flight window read off the link's own paho client), timed from the first
publish to the last PUBACK. Sides alternate (station, bare, bare, station, ...) so that drift hits both.
Each side's CPU time (this process, every thread) is shown per message: where the link spends more.

Each side is checked by central's consumer, a process of its own with a persistent QoS 1 session started
before the drain: every message received, in order, none missing (duplicates are allowed at QoS 1 and
counted). The outage is a real broker restart, so the broker keeps that session across it: persistence is
on, but written only when the broker stops (`autosave_interval 0`), so the broker touches no disk during
a drain. Targets: station / bare >= 0.8 at the median, drain <= 10 s (DESIGN.md, Budgets).

    .venv/bin/python -m bench.outbox [--messages 10000] [--repeat 5] [--quick] [--profile FILE]

`--profile FILE` adds one unmeasured station round under cProfile (the loop's thread, connect to empty
outbox) and prints where its time went. Prints a readable table, then one JSON line (the last line of
output). Needs Mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from models.bench import synthetic_scans
from station.alerts import Thumbnail, alert_payload, thumbnail_file
from station.config import MqttSection
from station.domain import Detected, Reason
from station.lane.recorder import reason_json, result_payload
from station.mqtt_link import CentralLink, Topics
from station.store import ItemRow, OutboxMessage, Store
from station.writer import StoreWriter
from tests.conftest import MOSQUITTO, Broker, free_port

TARGET_RATIO = 0.8  # station msgs/s over bare msgs/s, median of the rounds
TARGET_DRAIN_S = 10.0  # 10,000 messages (DESIGN.md)
PAHO_DEFAULT_INFLIGHT = 20  # paho's own, which aiomqtt keeps unless given `max_inflight_messages`
INSPECT_EVERY = 10  # one item in ten is INSPECT and has an alert as well as its result
POLL_S = 0.005
TOPICS = Topics("bench", "outbox")
clock = time.perf_counter


def note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ---- the payloads: what the recorder stores for a stream of items ------------------------------------


def box(rng: random.Random) -> tuple[float, float, float, float]:
    x, y = rng.uniform(0, 900), rng.uniform(0, 500)
    return x, y, x + rng.uniform(20, 120), y + rng.uniform(20, 120)


def item_row(rng: random.Random, inspect: bool) -> tuple[ItemRow, tuple[Detected, ...], tuple[Reason, ...]]:
    """One screened item as the lane records it: a barcode, two or three detections, reasons, a declaration."""
    s10 = f"RR{rng.randrange(10**8, 10**9)}CH"
    detections = tuple(Detected(rng.choice(["battery", "cable", "knife", "liquid", "electronics"]),
                                rng.uniform(0.3, 0.99), box(rng), threat=inspect and i == 0)
                       for i in range(rng.choice([2, 3])))
    findings = (Reason("VAGUE_DESCRIPTION", "contents[0].description 'gift' says nothing of what is inside",
                       "contents[0].description"),) if inspect or rng.random() < 0.3 else ()
    reasons = [Reason("THREAT_DETECTED", "knife over its threshold (0.81 >= 0.60)")] if inspect else []
    row = ItemRow(
        uid=str(uuid.UUID(int=rng.getrandbits(128), version=4)), track_id=rng.randrange(1, 10**6), item_id=s10,
        barcode=s10, scan_id=f"SCN-{rng.randrange(10**9):09d}", image_path=None,
        image_sha256=f"{rng.getrandbits(256):064x}", decision="INSPECT" if inspect else "CLEAR",
        routed="INSPECT" if inspect else "CLEAR", score=rng.uniform(0.6, 0.95) if inspect else rng.uniform(0, 0.3),
        reasons=[reason_json(r) for r in (*reasons, *findings)], ead_status="found", ead_version=1,
        model_hash=f"{rng.getrandbits(256):064x}", rules_version="default-16", decision_latency_ms=rng.uniform(20, 90),
        routed_at=time.time())
    return row, detections, findings


def thumbnails(count: int = 4) -> list[Thumbnail]:
    """Alert thumbnails as the recorder makes them: the standard view of synthetic scans, JPEG, <= 24 KB."""
    with tempfile.TemporaryDirectory(prefix="bench-outbox-scans-") as tmp:
        return [thumbnail_file(str(path)) for path in synthetic_scans(Path(tmp), count)]


def item_messages(payload: dict[str, object], topics: Topics, thumbnail: Thumbnail) -> list[OutboxMessage]:
    """The rows the recorder queues for a new item (`Recorder._messages`): its result, and if INSPECT
    its alert's `new`, with the scan's thumbnail."""
    result_id = str(payload["msg_id"])
    messages = [OutboxMessage(result_id, topics.result, json.dumps(payload))]
    if payload["decision"] == "INSPECT":
        alert = alert_payload(payload, msg_id=result_id.replace("/result", "/alert", 1), event="new", changes=[],
                              thumbnail=thumbnail)
        messages.append(OutboxMessage(str(alert["msg_id"]), topics.alert, json.dumps(alert)))
    return messages


def outbox_rows(count: int, topics: Topics = TOPICS, seed: int = 16) -> list[OutboxMessage]:
    """`count` outbox rows, in the order the lane would queue them."""
    rng = random.Random(seed)
    pictures = thumbnails()
    rows: list[OutboxMessage] = []
    while len(rows) < count:
        row, detections, findings = item_row(rng, inspect=rng.randrange(INSPECT_EVERY) == 0)
        payload = result_payload(row, topics, detections=detections, weight_kg=rng.uniform(0.1, 2.0),
                                 ead_findings=findings)
        rows.extend(item_messages(payload, topics, rng.choice(pictures)))
    return rows[:count]


# ---- the broker, and central's consumer -----------------------------------------------------------------


def broker_conf(port: int, folder: Path) -> str:
    """Sessions survive a restart (saved at the stop only), and a consumer that lags loses nothing
    (`max_queued_messages 0`: mosquitto drops QoS 1 messages beyond 1,000 queued by default)."""
    user = "user root\n" if os.geteuid() == 0 else ""
    return (f"listener {port} 127.0.0.1\nallow_anonymous true\n{user}persistence true\nautosave_interval 0\n"
            f"persistence_location {folder}/\nmax_queued_messages 0\nlog_dest file {folder}/mosquitto.log\n")


def consume(host: str, port: int, topic: str, client_id: str, expected: int, deadline_s: float,
            out: Connection) -> None:
    """Central's side, in a process of its own: a persistent QoS 1 session (MQTT 3.1.1, clean_session off)
    that reconnects by itself across a broker restart. Sends "ready" once subscribed, then the msg_ids in
    the order they came and how many were marked historical, once `expected` distinct ones came or at
    `deadline_s`. Unsubscribes before it leaves, so that its lingering session queues nothing later."""
    ids: list[str] = []
    seen: set[str] = set()
    historical = 0
    subscribed, complete, unsubscribed = threading.Event(), threading.Event(), threading.Event()

    def on_connect(client: mqtt.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        client.subscribe(topic, qos=1)

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal historical
        body = json.loads(message.payload)
        ids.append(body["msg_id"])
        seen.add(body["msg_id"])
        historical += body.get("historical") is True
        if len(seen) >= expected:
            complete.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                         protocol=MQTTProtocolVersion.MQTTv311)
    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_unsubscribe = lambda *args: unsubscribed.set()
    client.on_message = on_message
    # back within 0.1 s of the broker, so that it takes the drain live as in the bare round (paho's hint says
    # int; it sleeps any float)
    client.reconnect_delay_set(0.1, 0.1)  # type: ignore[arg-type]
    client.connect(host, port)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError(f"consumer {client_id}: no SUBACK within 10 s")
        out.send("ready")
        complete.wait(deadline_s)
        client.unsubscribe(topic)
        unsubscribed.wait(5)
    finally:
        client.disconnect()
        client.loop_stop()
    out.send({"ids": ids, "historical": historical})


@dataclass(frozen=True)
class Received:
    """What central's consumer got of one side's messages."""

    received: int
    distinct: int
    duplicates: int
    missing: int
    in_order: bool  # first arrivals in the order the messages were queued
    historical: int  # marked `historical` by the publisher (the link: queued before this session)

    @property
    def complete(self) -> bool:
        return self.missing == 0 and self.in_order


def received(expected: list[str], got: list[str], historical: int) -> Received:
    first = list(dict.fromkeys(got))
    return Received(len(got), len(first), len(got) - len(first), len(set(expected) - set(first)),
                    first == expected, historical)


class Consumer:
    """The consumer process of one side of one round."""

    def __init__(self, broker: Broker, client_id: str, expected: list[str], deadline_s: float) -> None:
        self.expected = expected
        self.deadline_s = deadline_s
        ctx = multiprocessing.get_context("spawn")
        self._from, into = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=consume, name=client_id, daemon=True,
                                   args=(broker.host, broker.port, f"{TOPICS.root}/items/#", client_id,
                                         len(expected), deadline_s, into))
        self.process.start()
        into.close()
        if self._next(30) != "ready":
            self.process.kill()
            raise RuntimeError(f"consumer {client_id} did not subscribe")

    def _next(self, timeout_s: float) -> Any:
        """What the consumer sends next; RuntimeError if it sends nothing in time or died."""
        try:
            if self._from.poll(timeout_s):
                return self._from.recv()
        except EOFError:
            self.process.join(5)
            raise RuntimeError(f"consumer {self.process.name} exited ({self.process.exitcode})") from None
        raise RuntimeError(f"consumer {self.process.name} sent nothing in {timeout_s:.0f} s")

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():  # the round failed before its result was taken
            self.process.kill()
            self.process.join(5)

    def result(self) -> Received:
        """Once it has every message (or gave up at its deadline)."""
        try:
            report: dict[str, Any] = self._next(self.deadline_s + 15)
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
            self._from.close()
        return received(self.expected, report["ids"], report["historical"])


# ---- the two sides ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    side: str  # "station" or "bare"
    seconds: float  # station: link connected -> outbox empty; bare: first publish -> last PUBACK
    acked_s: float  # -> the last PUBACK (station: `link.published` reaches the count)
    cpu_s: float  # CPU time of this process (every thread of it) over `seconds`: not the broker's or consumer's
    inflight: int | None  # the paho in-flight window it ran with (None: could not be read)
    got: Received
    msgs_per_s: float


def link_window(link: CentralLink) -> int | None:
    """The in-flight window of the link's paho client (aiomqtt hands `max_inflight_messages` to paho, or
    leaves paho's default). Read through private attributes while connected: None if they moved."""
    paho = getattr(getattr(link, "_client", None), "_client", None)
    value = getattr(paho, "_max_inflight_messages", None)
    return value if isinstance(value, int) else None


async def until(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    async with asyncio.timeout(deadline_s):
        while not condition():
            await asyncio.sleep(POLL_S)
    if not condition():
        raise RuntimeError(what)


async def station_drain(broker: Broker, rows: list[OutboxMessage], folder: Path, client_id: str, deadline_s: float,
                        profiler: cProfile.Profile | None) -> tuple[float, float, float, int | None]:
    """The outage and the reconnect: (connected -> outbox empty, connected -> last PUBACK, this process's
    CPU seconds over the drain, window).
    `profiler` runs from the connect to the empty outbox."""
    await asyncio.to_thread(broker.stop)  # central's session is saved with the broker
    folder.mkdir(parents=True)
    path = folder / "station.db"
    with Store(path) as store:
        store.enqueue(rows)  # one transaction, with no broker reachable
        async with StoreWriter(path) as writer:
            link = CentralLink(store, writer, MqttSection(host=broker.host, port=broker.port), client_id)
            task = asyncio.create_task(link.run())
            try:
                await until(lambda: link.health.errors.get("link", 0) > 0, 10, "the link never tried the broker")
                await asyncio.to_thread(broker.start)
                async with asyncio.timeout(30):
                    await link.connected.wait()
                t0, cpu0 = clock(), time.process_time()
                if profiler is not None:
                    profiler.enable()
                window = link_window(link)
                await until(lambda: link.published >= len(rows), deadline_s, f"{link.published} of {len(rows)} acked")
                t_acked = clock()
                await until(lambda: store.outbox_count() == 0, deadline_s, "the outbox did not empty")
                t_empty, cpu = clock(), time.process_time() - cpu0
            finally:
                if profiler is not None:
                    profiler.disable()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    return t_empty - t0, t_acked - t0, cpu, window


def station_round(broker: Broker, rows: list[OutboxMessage], folder: Path, tag: str, deadline_s: float,
                  profiler: cProfile.Profile | None = None) -> Drain:
    with Consumer(broker, f"bench-central-{tag}-station", [r.msg_id for r in rows], deadline_s) as consumer:
        drained = station_drain(broker, rows, folder, f"bench-station-{tag}", deadline_s, profiler)
        seconds, acked_s, cpu_s, window = asyncio.run(drained)
        return Drain("station", seconds, acked_s, cpu_s, window, consumer.result(), len(rows) / seconds)


def bare_publish(broker: Broker, rows: list[OutboxMessage], client_id: str, inflight: int,
                 deadline_s: float) -> tuple[float, float]:
    """The same payloads through a bare paho client: (first publish -> last PUBACK, CPU seconds of it)."""
    acked = 0
    connected, all_acked = threading.Event(), threading.Event()

    def on_publish(client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(rows):
            all_acked.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(inflight)
    client.on_connect = lambda *args: connected.set()
    client.on_publish = on_publish
    messages = [(r.topic, r.payload) for r in rows]
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("bare paho did not connect")
        t0, cpu0 = clock(), time.process_time()
        for topic, payload in messages:
            client.publish(topic, payload, qos=1)
        if not all_acked.wait(deadline_s):
            raise RuntimeError(f"bare paho: {acked} of {len(rows)} acknowledged in {deadline_s:.0f} s")
        elapsed: float = clock() - t0
        return elapsed, time.process_time() - cpu0
    finally:
        client.disconnect()
        client.loop_stop()


def bare_round(broker: Broker, rows: list[OutboxMessage], tag: str, inflight: int, deadline_s: float) -> Drain:
    with Consumer(broker, f"bench-central-{tag}-bare", [r.msg_id for r in rows], deadline_s) as consumer:
        seconds, cpu_s = bare_publish(broker, rows, f"bench-bare-{tag}", inflight, deadline_s)
        return Drain("bare", seconds, seconds, cpu_s, inflight, consumer.result(), len(rows) / seconds)


# ---- the run ---------------------------------------------------------------------------------------------


def bench(work: Path, messages: int, repeat: int, profile: Path | None = None) -> dict[str, Any]:
    rows = outbox_rows(messages)
    deadline_s = 60.0 + messages / 200
    port = free_port()
    (work / "mosquitto.conf").write_text(broker_conf(port, work))
    broker = Broker("127.0.0.1", port, None, work / "mosquitto.conf")
    broker.start()
    rounds: list[dict[str, Drain]] = []
    window: int | None = None
    try:
        for r in range(repeat):
            done: dict[str, Drain] = {}
            for side in ("station", "bare") if r % 2 == 0 else ("bare", "station"):
                note(f"round {r + 1}/{repeat}: {side}")
                if side == "station":
                    done[side] = station_round(broker, rows, work / f"r{r}", f"r{r}", deadline_s)
                    window = done[side].inflight if done[side].inflight is not None else window
                else:
                    done[side] = bare_round(broker, rows, f"r{r}", window or PAHO_DEFAULT_INFLIGHT, deadline_s)
            rounds.append(done)
        profiled = profile_station(broker, rows, work, deadline_s, profile) if profile is not None else None
    finally:
        broker.stop()
    return summary(rows, rounds, profiled)


def profile_station(broker: Broker, rows: list[OutboxMessage], work: Path, deadline_s: float,
                    path: Path) -> list[str]:
    """One more station round, unmeasured, with cProfile on from the link's connect to the empty outbox
    (the loop's thread only: the store writer's and the consumer's work are not in it)."""
    note("profiling one more station round")
    profiler = cProfile.Profile()
    drain = station_round(broker, rows, work / "profiled", "profiled", deadline_s, profiler)
    profiler.dump_stats(path)
    lines = [f"profiled station round: {drain.msgs_per_s:,.0f} msg/s under cProfile ({drain.seconds:.3f} s)"]
    for sort in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(sort).print_stats(25)
        lines += [f"-- top 25 by {sort} (all of it in {path})",
                  *(line for line in text.getvalue().splitlines() if line.strip())]
    return lines


def summary(rows: list[OutboxMessage], rounds: list[dict[str, Drain]], profiled: list[str] | None) -> dict[str, Any]:
    def median(side: str, attr: str) -> float:
        return round(float(statistics.median(getattr(d[side], attr) for d in rounds)), 4)

    def mean_bytes(topic: str) -> int:
        return round(statistics.fmean([len(r.payload.encode()) for r in rows if r.topic == topic] or [0]))

    ratios = [d["station"].msgs_per_s / d["bare"].msgs_per_s for d in rounds]
    ratio = round(statistics.median(ratios), 3)
    drain = median("station", "seconds")
    complete = all(d[side].got.complete for d in rounds for side in d)
    return {
        "bench": "outbox", "python": sys.version.split()[0], "messages": len(rows), "rounds": len(rounds),
        "alerts": sum(r.topic == TOPICS.alert for r in rows),
        "payload_bytes_mean": {"result": mean_bytes(TOPICS.result), "alert": mean_bytes(TOPICS.alert)},
        "inflight": {"station": rounds[0]["station"].inflight, "bare": rounds[0]["bare"].inflight},
        "per_round": [{side: asdict(d) for side, d in done.items()} | {"ratio": round(x, 3)}
                      for done, x in zip(rounds, ratios, strict=True)],
        "median": {"station_msgs_per_s": median("station", "msgs_per_s"),
                   "bare_msgs_per_s": median("bare", "msgs_per_s"), "ratio": ratio, "station_drain_s": drain,
                   "station_acked_s": median("station", "acked_s"), "bare_s": median("bare", "seconds"),
                   "station_cpu_us_per_msg": round(median("station", "cpu_s") * 1e6 / len(rows), 1),
                   "bare_cpu_us_per_msg": round(median("bare", "cpu_s") * 1e6 / len(rows), 1)},
        "target": {"ratio": TARGET_RATIO, "drain_s": TARGET_DRAIN_S, "drain_at_messages": 10_000},
        "complete": complete, "ratio_ok": ratio >= TARGET_RATIO, "drain_ok": drain <= TARGET_DRAIN_S,
        "ok": complete and ratio >= TARGET_RATIO and drain <= TARGET_DRAIN_S, "profile": profiled,
    }


def _got(r: dict[str, Any]) -> str:
    g = r["got"]
    order = "" if g["in_order"] else " OUT OF ORDER"
    return f"{g['distinct']}/{g['distinct'] + g['missing']}{order} +{g['duplicates']}d"


def _cpu(seconds: float, messages: int) -> str:
    return f"{seconds * 1e6 / messages:.0f}"


def table(result: dict[str, Any]) -> list[str]:
    m, w, size, n = result["median"], result["inflight"], result["payload_bytes_mean"], result["messages"]
    out = [f"Outbox drain after a broker outage: {result['messages']:,} messages, {result['alerts']:,} of them alerts "
           f"(mean {size['result']:,} B a result, {size['alert']:,} B an alert with its thumbnail)",
           f"{result['rounds']} alternating rounds, MQTT 5, QoS 1",
           f"in-flight window: station link {w['station'] if w['station'] is not None else '? (unreadable)'} "
           f"(paho's default is {PAHO_DEFAULT_INFLIGHT}), bare paho {w['bare']}",
           f"{'round':>5} {'first':>8} {'station msg/s':>14} {'bare msg/s':>11} {'ratio':>6} {'drain s':>8} "
           f"{'acked s':>8} {'bare s':>7} {'CPU µs/msg st|bare':>18}  received station | bare "
           f"(distinct/sent +duplicates)"]
    for i, r in enumerate(result["per_round"], 1):
        s, b = r["station"], r["bare"]
        out.append(f"{i:>5} {'station' if i % 2 else 'bare':>8} {s['msgs_per_s']:14,.0f} {b['msgs_per_s']:11,.0f} "
                   f"{r['ratio']:6.3f} {s['seconds']:8.3f} {s['acked_s']:8.3f} {b['seconds']:7.3f} "
                   f"{_cpu(s['cpu_s'], n):>8} | {_cpu(b['cpu_s'], n):<7}  "
                   f"{_got(s)} (historical {s['got']['historical']}) | {_got(b)}")
    out.append(f"{'median':>5} {'':>8} {m['station_msgs_per_s']:14,.0f} {m['bare_msgs_per_s']:11,.0f} "
               f"{m['ratio']:6.3f} {m['station_drain_s']:8.3f} {m['station_acked_s']:8.3f} {m['bare_s']:7.3f} "
               f"{m['station_cpu_us_per_msg']:>8.0f} | {m['bare_cpu_us_per_msg']:<7.0f}")
    drain_note = "" if n == 10_000 else f" (the target is for 10,000; this run has {n:,})"
    out += [f"ratio station/bare >= {TARGET_RATIO}: {'PASS' if result['ratio_ok'] else 'FAIL'}",
            f"station drain <= {TARGET_DRAIN_S:.0f} s: {'PASS' if result['drain_ok'] else 'FAIL'}{drain_note}",
            f"every message received in order: {'PASS' if result['complete'] else 'FAIL'}"]
    return out + (result["profile"] or [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000, help="outbox rows drained (and published bare) per round")
    ap.add_argument("--repeat", type=int, default=5, help="rounds, each side once per round, alternating first")
    ap.add_argument("--quick", action="store_true", help="for CI: 1 round of 1,000 messages")
    ap.add_argument("--profile", type=Path, help="then one more station round under cProfile, its stats to this file")
    ap.add_argument("--workdir", type=Path, help="keep the stores and the broker's log here (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.quick:
        args.messages, args.repeat = 1_000, 1
    if MOSQUITTO is None:
        print("needs mosquitto (apt-get install mosquitto)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = bench(work, args.messages, args.repeat, args.profile)
    print("\n".join(table(result)))
    print(json.dumps(result, separators=(",", ":")))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
