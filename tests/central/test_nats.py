"""The same lane on a second broker implementation: NATS server's MQTT listener (MQTT 3.1.1, which needs
JetStream and a server name), started by the test, to show nothing assumes Mosquitto."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.central.lane_process import Central, LaneProcess
from tests.central.test_liveness import stored_results
from tests.conftest import Broker, free_port

pytestmark = pytest.mark.slow

NATS = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[Broker]:
    if NATS is None:
        pytest.skip("nats-server is not installed (apt-get install nats-server): the second-broker test needs it")
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(f'server_name: lane-test\nlisten: 127.0.0.1:{free_port()}\n'
                      f'jetstream {{ store_dir: "{tmp_path}/js" }}\nmqtt {{ listen: 127.0.0.1:{port} }}\n')
    with (tmp_path / "nats.log").open("w") as log:
        process = subprocess.Popen([NATS, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"nats-server did not listen for MQTT:\n{(tmp_path / 'nats.log').read_text()}")
            time.sleep(0.05)
    try:
        yield Broker("127.0.0.1", port, None, config)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_lane_on_nats_mqtt_says_online_publishes_everything_and_its_will_says_offline(tmp_path: Path,
                                                                                       nats: Broker) -> None:
    lane = LaneProcess(tmp_path, nats, mqtt={"protocol": "3.1.1", "keepalive_s": 5})

    async def main() -> None:
        async with Central(nats) as central:
            lane.start()
            await central.until(central.status("online", 1), "online, session 1 (on NATS)")
            await central.until(lambda h: len(central.on("items/result")) >= 6, "6 results", timeout=60)
            states = {h.topic.rsplit("/", 1)[1] for h in central.heard if "/state/" in h.topic}
            assert states >= {"lane", "plc", "scanner", "barcode", "mqtt"}, states
            lane.kill()
            await central.until(central.status("offline", 1), "the last will, session 1", timeout=15)
            lane.start()
            await central.until(central.status("online", 2), "online, session 2")
            await central.until(lambda h: h.payload.get("session") == 2 and h.topic.endswith("/items/result")
                                and not h.payload["historical"], "a new result in session 2", timeout=60)
            assert lane.stop() == 0
            await central.until(central.status("offline", 2), "offline, session 2")
            received = Counter(str(h.payload["msg_id"]) for h in central.on("items/result"))
            assert set(received) == stored_results(lane.data_dir)
            print(f"NATS: {len(received)} results, {sum(received.values()) - len(received)} duplicates, "
                  f"{len(central.heard)} messages validated")

    try:
        asyncio.run(main())
    finally:
        lane.stop()
