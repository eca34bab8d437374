"""Benchmark: the outbox drained after a broker outage, through the station's link versus bare paho.

The station side: N messages (items/result payloads of the size the recorder writes, one in ten with
its alert) queued in the store while no broker is reachable; the broker comes up; timed from the
link's CONNACK (it is up: status and birth are published first) to the last message acknowledged and
deleted. The bare side: the same payloads published by a bare paho client at QoS 1 with the same
in-flight window, timed from the first publish to the last PUBACK. A consumer with a persistent QoS 1
session counts what arrived (distinct msg_ids) on both sides. Rounds alternate, so that the two share
the machine's noise. Targets: station/bare >= 0.8 at the median, and the drain <= 10 s.

    .venv/bin/python -m bench.outbox [--messages 10000] [--rounds 5] [--quick]

Prints a table, then one JSON line (the last line of output).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho

from station.config import MqttSection
from station.lane.recorder import result_payload
from station.mqtt_link import CentralLink, Topics
from station.store import ItemRow, OutboxMessage, Store
from station.writer import StoreWriter
from tests.conftest import MOSQUITTO, Broker, free_port

TARGET_RATIO = 0.8
TARGET_DRAIN_S = 10.0
INFLIGHT = 20  # paho's default window, which aiomqtt leaves as it is: both sides use it
TOPICS = Topics("BENCH", "lane-1")


def payloads(n: int) -> list[OutboxMessage]:
    """What the recorder queues for n items: a result each, and an alert for every tenth."""
    messages = []
    for i in range(n):
        uid = f"{i:08d}-bench"
        row = ItemRow(uid=uid, track_id=i, item_id=f"RR{i % 10**8:08d}5GB", barcode=f"RR{i % 10**8:08d}5GB",
                      scan_id=f"SCAN-{i}", image_path=None, image_sha256="ab" * 32,
                      decision="INSPECT" if i % 10 == 0 else "CLEAR", routed="INSPECT" if i % 10 == 0 else "CLEAR",
                      score=0.12, reasons=[{"code": "EAD_VALUE_MISMATCH", "detail": "declared 12 EUR, weight 3.1 kg"}],
                      ead_status="found", ead_version=1, model_hash="cd" * 32, rules_version="default-1",
                      decision_latency_ms=14.2, routed_at=time.time())
        body = result_payload(row, TOPICS, detections=(), weight_kg=0.42, ead_findings=())
        messages.append(OutboxMessage(str(body["msg_id"]), TOPICS.result, json.dumps(body)))
        if i % 10 == 0:
            alert = {**body, "msg_id": f"{uid}/alert", "schema": "screening/v1/item-alert", "alert_id": uid,
                     "event": "new", "changes": []}
            messages.append(OutboxMessage(str(alert["msg_id"]), TOPICS.alert, json.dumps(alert)))
    return messages


class Central:
    """Central's side: a persistent QoS 1 session counting distinct msg_ids, on a thread of its own."""

    def __init__(self, broker: Broker, name: str, expected: int = 0) -> None:
        self.ids: set[str] = set()
        self.received = 0
        self.done = threading.Event()
        self.expected = expected
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name, clean_session=False)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("screening/v1/BENCH/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic.endswith(("/items/result", "/items/alert")):
            self.received += 1
            self.ids.add(json.loads(message.payload)["msg_id"])
            if len(self.ids) >= self.expected:
                self.done.set()

    def expect(self, n: int) -> None:
        self.ids.clear()
        self.received, self.expected = 0, n
        self.done.clear()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def station_round(broker: Broker, messages: list[OutboxMessage], folder: Path,
                  broker_up: Callable[[], None]) -> dict[str, float]:
    async def main() -> dict[str, float]:
        path = folder / f"station-{time.monotonic_ns()}.db"
        with Store(path) as store:
            store.enqueue(messages)  # queued during the outage
            async with StoreWriter(path) as writer:
                link = CentralLink(store, writer, MqttSection(host=broker.host, port=broker.port), "bench-station",
                                   topics=TOPICS, backoff=(0.05, 0.2))
                task = asyncio.create_task(link.run())
                await asyncio.sleep(0.3)  # the link tries a broker that is not there
                broker.start()
                broker_up()  # central back on its persistent session, before the link's retry comes
                await link.connected.wait()
                started = time.perf_counter()
                while link.published < len(messages):
                    await asyncio.sleep(0.005)
                await writer.drained()
                elapsed = time.perf_counter() - started
                left = store.outbox_count()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return {"s": elapsed, "left": float(left)}

    return asyncio.run(main())


def bare_round(broker: Broker, messages: list[OutboxMessage]) -> dict[str, float]:
    acked = threading.Event()
    count = [0]

    def on_publish(client: paho.Client, userdata: object, mid: int, reason: object, props: object) -> None:
        count[0] += 1
        if count[0] == len(messages):
            acked.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False)
    client.max_inflight_messages_set(INFLIGHT)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    started = time.perf_counter()
    for msg in messages:
        client.publish(msg.topic, msg.payload, qos=1)
    acked.wait(120)
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return {"s": elapsed, "left": float(len(messages) - count[0])}


def run(n: int, rounds: int) -> dict[str, object]:
    if MOSQUITTO is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    messages = payloads(n)
    figures: dict[str, list[float]] = {"station_msgs_s": [], "bare_msgs_s": [], "station_drain_s": [], "ratio": []}
    lost = duplicates = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = free_port()
        conf = folder / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n{user}persistence true\n"
                        f"persistence_location {folder}/\nmax_queued_messages 0\n")
        broker = Broker("127.0.0.1", port, None, conf)
        broker.start()
        counter = Central(broker, "bench-central")
        try:
            for r in range(rounds):
                order = ("station", "bare") if r % 2 == 0 else ("bare", "station")
                result: dict[str, float] = {}
                for side in order:
                    counter.expect(len(messages))
                    if side == "station":
                        broker.stop()  # the outage
                        counter.close()
                        back: list[Central] = []

                        def central_back(back: list[Central] = back) -> None:
                            back.append(Central(broker, "bench-central", len(messages)))

                        s = station_round(broker, messages, folder, central_back)
                        counter = back[0]
                    else:
                        s = bare_round(broker, messages)
                    counter.done.wait(60)
                    lost += len(messages) - len(counter.ids)
                    duplicates += max(0, counter.received - len(counter.ids))
                    result[side] = s["s"]
                figures["station_msgs_s"].append(len(messages) / result["station"])
                figures["bare_msgs_s"].append(len(messages) / result["bare"])
                figures["station_drain_s"].append(result["station"])
                figures["ratio"].append(result["bare"] / result["station"])
                print(f"round {r + 1}: station {len(messages) / result['station']:8.0f} msg/s "
                      f"({result['station']:.2f} s), bare paho {len(messages) / result['bare']:8.0f} msg/s, "
                      f"ratio {result['bare'] / result['station']:.2f}", flush=True)
        finally:
            counter.close()
            broker.stop()
    medians = {k: round(statistics.median(v), 3) for k, v in figures.items()}
    return {"messages": len(messages), "rounds": rounds, "inflight": INFLIGHT, "median": medians,
            "lost": lost, "ratio_ok": medians["ratio"] >= TARGET_RATIO,
            "drain_ok": medians["station_drain_s"] <= TARGET_DRAIN_S}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000, help="items queued (plus an alert for every tenth)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1 round of 1,000 items (CI)")
    args = ap.parse_args(argv)
    n, rounds = (1000, 1) if args.quick else (args.messages, args.rounds)
    result = run(n, rounds)
    m = result["median"]
    assert isinstance(m, dict)
    print(f"\n{result['messages']} messages, {rounds} rounds, in-flight window {INFLIGHT}, medians:")
    print(f"  station link      {m['station_msgs_s']:9.0f} msg/s   drain {m['station_drain_s']:.2f} s "
          f"(target <= {TARGET_DRAIN_S:.0f} s: {'ok' if result['drain_ok'] else 'MISSED'})")
    print(f"  bare paho QoS 1   {m['bare_msgs_s']:9.0f} msg/s")
    print(f"  station / bare    {m['ratio']:9.2f}         (target >= {TARGET_RATIO}: "
          f"{'ok' if result['ratio_ok'] else 'MISSED'})")
    print(f"  lost              {result['lost']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
