"""The brokers the central link is tried on: Mosquitto, and NATS server's MQTT listener, a second
implementation (MQTT 3.1.1 only; its MQTT needs JetStream and a server name), to show nothing assumes
Mosquitto."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MOSQUITTO, Broker, broker_config, free_port

NATS = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)


@dataclass(frozen=True)
class Estate:
    """A broker and the MQTT version the lanes speak to it."""

    broker: Broker
    protocol: str


@pytest.fixture(params=["mosquitto", "nats"])
def estate(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Estate]:
    port = free_port()
    config = tmp_path / "broker.conf"
    if request.param == "nats":
        if NATS is None:
            pytest.skip("nats-server is not installed (apt-get install nats-server): the second broker is missing")
        config.write_text(f"server_name: lane-test\nlisten: 127.0.0.1:{free_port()}\n"
                          f'jetstream {{ store_dir: "{tmp_path}/js" }}\nmqtt {{ listen: 127.0.0.1:{port} }}\n')
        broker, protocol = Broker("127.0.0.1", port, None, config, program=NATS), "3.1.1"
    else:
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)")
        config.write_text(broker_config(port, tmp_path))
        broker, protocol = Broker("127.0.0.1", port, None, config), "5"
    broker.start()
    try:
        yield Estate(broker, protocol)
    finally:
        broker.stop()
