"""The central link's security against a real Mosquitto: TLS with the broker verified and a client
certificate per lane, username and password as the alternative, and the ACL that keeps a lane to its
own topics; a refused connection is one clear sentence in the link's health and its WARNING log.

The broker runs docs/mosquitto-tls.conf.example and docs/mosquitto-acl.example as the site would,
with only paths and ports replaced, plus TLS listeners of the tests' own with a wrong broker
certificate: for another host name, with the name in its CN only, expired. Certificates come from
tests/central/pki.py. Every wait is on an event or a polled state with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import paho.mqtt.client as mqtt
import pytest

from drivers.health import DeviceHealth, HealthState
from station.config import ConfigError, MqttSection
from station.mqtt_link import CentralLink, Topics
from station.mqtt_tls import explain, tls_context
from station.store import OutboxMessage, Store, append_outbox
from tests.central.lane_process import running_link as lane_link
from tests.central.pki import OPENSSL, KeyPair, Pki, make_pki
from tests.conftest import MOSQUITTO, Broker, free_port

DOCS = Path(__file__).parents[2] / "docs"
TOPICS = Topics("SITE-1", "lane-1")  # the site and lane docs/mosquitto-acl.example is written for
LANE_ID = "station-SITE-1-lane-1"
OTHER_LANE_ID = "station-SITE-1-lane-2"
PASSWORD = "lane-1's password"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if OPENSSL is None:
        pytest.skip("openssl is not installed (apt-get install openssl): the TLS tests make their certificates")
    return make_pki(tmp_path_factory.mktemp("pki"))


def free_ports(count: int) -> list[int]:
    """`count` different free ports (free_port() one after another may give the same one twice)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@dataclass(frozen=True)
class Site:
    """The site's broker: certificates on `tls_port` (8883 in the example), username and password over
    TLS on `password_port` (8884), and the tests' own listeners with the wrong broker certificates."""

    pki: Pki
    broker: Broker
    tls_port: int
    password_port: int
    wrong_name_port: int
    expired_port: int
    cn_only_port: int

    def lane(self, port: int | None = None, client: KeyPair | None = None, **mqtt: object) -> MqttSection:
        """Lane 1's [mqtt] section: TLS to `port`, the site CA, its client certificate."""
        client = client or self.pki.lane(LANE_ID)
        settings: dict[str, object] = {"host": "localhost", "port": port or self.tls_port, "tls": True,
                                       "ca_file": self.pki.ca, "cert_file": client.cert, "key_file": client.key,
                                       **mqtt}
        return MqttSection.model_validate(settings)


@pytest.fixture
def site(pki: Pki, tmp_path: Path) -> Iterator[Site]:
    if MOSQUITTO is None or MOSQUITTO_PASSWD is None:
        pytest.skip("mosquitto and mosquitto_passwd are not installed (apt-get install mosquitto; .ci/run installs it)")
    ports = free_ports(5)
    acl, passwd = tmp_path / "site.acl", tmp_path / "passwd"
    acl.write_text((DOCS / "mosquitto-acl.example").read_text())
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(passwd), LANE_ID, PASSWORD], check=True, capture_output=True)
    config = (DOCS / "mosquitto-tls.conf.example").read_text()
    for documented, here in (("listener 8883", f"listener {ports[0]} 127.0.0.1"),
                             ("listener 8884", f"listener {ports[1]} 127.0.0.1"),
                             ("/etc/mosquitto/certs/", f"{pki.folder}/"), ("/etc/mosquitto/site.acl", str(acl)),
                             ("/etc/mosquitto/passwd", str(passwd)), ("/var/lib/mosquitto/", f"{tmp_path}/")):
        assert documented in config, documented
        config = config.replace(documented, here)
    for port, pair in ((ports[2], pki.wrong_name), (ports[3], pki.expired), (ports[4], pki.cn_only)):
        config += (f"\nlistener {port} 127.0.0.1\ncafile {pki.ca}\ncertfile {pair.cert}\nkeyfile {pair.key}\n"
                   f"require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
                   f"acl_file {acl}\n")
    root = "user root\n" if os.geteuid() == 0 else ""  # as root, mosquitto would drop to a user who cannot read here
    (tmp_path / "mosquitto.conf").write_text(f"{root}log_dest file {tmp_path}/mosquitto.log\n{config}")
    broker = Broker("127.0.0.1", ports[0], None, tmp_path / "mosquitto.conf")
    broker.start()  # once the first listener accepts; the others open just after it
    try:
        for port in ports[1:]:
            wait_listening(port)
        yield Site(pki, broker, *ports)
    finally:
        broker.stop()


def running_link(path: Path, config: MqttSection) -> AbstractAsyncContextManager[CentralLink]:
    """Lane 1's link to central, running as the daemon runs it."""
    return lane_link(path, config, LANE_ID, TOPICS)


async def refusal(link: CentralLink, timeout: float = 8) -> DeviceHealth:
    """The link's health once its first connect has failed."""
    async with asyncio.timeout(timeout):
        while link.health.state is not HealthState.DOWN:
            assert not link.connected.is_set(), "the link connected, but it should have been refused"
            await asyncio.sleep(0.02)
    return link.health


def refused_with(tmp_path: Path, config: MqttSection, caplog: pytest.LogCaptureFixture) -> str:
    """Run the link until it is refused; its health detail, which the WARNING log must say too."""
    caplog.set_level(logging.WARNING, logger="station")

    async def main() -> str:
        async with running_link(tmp_path / "s.db", config) as link:
            return (await refusal(link)).detail

    detail = asyncio.run(main())
    warned = [r.getMessage() for r in caplog.records if r.name == "station.mqtt_link" and r.levelno == logging.WARNING]
    assert any(detail in message for message in warned), (detail, warned)
    return detail


def client(config: MqttSection, identifier: str, timeout: float = 10) -> aiomqtt.Client:
    return aiomqtt.Client(config.host, config.port, identifier=identifier, username=config.username,
                          password=config.password, tls_context=tls_context(config),
                          protocol=aiomqtt.ProtocolVersion.V5, timeout=timeout)


def central(site: Site) -> aiomqtt.Client:
    """Central's own account: a client certificate with CN central, on the lanes' listener."""
    return client(site.lane(client=site.pki.lane("central")), "central")


async def next_message(subscriber: aiomqtt.Client, timeout: float = 10) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        return await anext(subscriber.messages)


def test_a_lane_connects_with_its_certificate_and_central_hears_it_online(tmp_path: Path, site: Site) -> None:
    async def main() -> None:
        async with central(site) as listener:
            await listener.subscribe(TOPICS.status, qos=1)
            async with running_link(tmp_path / "s.db", site.lane()) as link:
                await asyncio.wait_for(link.connected.wait(), 8)
                assert link.health.state is HealthState.UP
                message = await next_message(listener)
                assert message.topic.value == TOPICS.status
                assert json.loads(bytes(message.payload))["state"] == "online"  # type: ignore[arg-type]
    asyncio.run(main())


def test_a_broker_certificate_from_another_ca_is_refused(tmp_path: Path, site: Site,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    detail = refused_with(tmp_path, site.lane(ca_file=site.pki.other_ca), caplog)
    assert detail.startswith(f"TLS: the broker's certificate at localhost:{site.tls_port} is not signed by the CA "
                             f"in ca_file {site.pki.other_ca}, so it is not trusted"), detail


@pytest.mark.parametrize("listener", ["another name", "the name in its CN only"])
def test_a_broker_certificate_that_does_not_name_the_host_is_refused(tmp_path: Path, site: Site, listener: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    port = site.wrong_name_port if listener == "another name" else site.cn_only_port
    detail = refused_with(tmp_path, site.lane(port), caplog)
    assert detail == (f"TLS: the broker's certificate at localhost:{port} does not name localhost: "
                      f"the certificate must carry it as a subjectAltName (DNS:localhost)")


def test_an_expired_broker_certificate_is_refused(tmp_path: Path, site: Site, caplog: pytest.LogCaptureFixture) -> None:
    detail = refused_with(tmp_path, site.lane(site.expired_port), caplog)
    assert detail.startswith(f"TLS: the broker's certificate at localhost:{site.expired_port} has expired"), detail


def test_tls_insecure_connects_to_a_misnamed_broker_and_warns_at_every_connect(
        tmp_path: Path, site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="station")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "station.mqtt_tls" and r.levelno == logging.WARNING and "tls_insecure" in r.getMessage()]

    async def main() -> None:
        async with running_link(tmp_path / "s.db", site.lane(site.wrong_name_port, tls_insecure=True)) as link:
            await asyncio.wait_for(link.connected.wait(), 8)
            assert len(warnings()) == 1, warnings()
            site.broker.stop()  # every reconnect (each try takes a session number) warns again
            site.broker.start()
            async with asyncio.timeout(8):
                while link.session < 2 or link.health.state is not HealthState.UP:
                    await asyncio.sleep(0.02)
            assert len(warnings()) == link.session, (link.session, warnings())
    asyncio.run(main())
    assert "the broker's certificate is not checked for the name localhost" in warnings()[0]


def test_a_username_and_password_connect_and_a_wrong_password_is_refused(
        tmp_path: Path, site: Site, caplog: pytest.LogCaptureFixture) -> None:
    def lane(password: str) -> MqttSection:  # TLS, the broker verified, no client certificate
        return MqttSection(host="localhost", port=site.password_port, tls=True, ca_file=site.pki.ca,
                           username=LANE_ID, password=password)

    async def main() -> None:
        async with running_link(tmp_path / "s.db", lane(PASSWORD)) as link:
            await asyncio.wait_for(link.connected.wait(), 8)
    asyncio.run(main())
    detail = refused_with(tmp_path, lane("not the password"), caplog)
    assert detail.startswith(f"the broker at localhost:{site.password_port} refused the connection: not authorised "
                             f"(username '{LANE_ID}')"), detail


def publish_as(config: MqttSection, identifier: str, messages: list[str]) -> list[int]:
    """Publish to each topic at QoS 1 over MQTT 5, in order on one connection: each PUBACK's reason code.
    (paho itself: aiomqtt does not report the reason code, so a refused message looks delivered.)"""
    acks: dict[int, int] = {}
    connected = threading.Event()
    lane = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=identifier, protocol=mqtt.MQTTv5)
    lane.tls_set_context(tls_context(config))
    lane.on_connect = lambda _c, _u, _f, code, _p: connected.set() if code == 0 else None
    lane.on_publish = lambda _c, _u, mid, code, _p: acks.__setitem__(mid, code.value)
    lane.connect(config.host, config.port)
    lane.loop_start()
    try:
        assert connected.wait(8), "the lane did not connect"
        sent = [lane.publish(topic, b'{"n": 1}', qos=1) for topic in messages]
        for info in sent:
            info.wait_for_publish(8)
    finally:
        lane.disconnect()
        lane.loop_stop()
    return [acks[info.mid] for info in sent]


def test_a_lane_publishes_only_under_its_own_root(site: Site) -> None:
    other_lane = Topics("SITE-1", "lane-2")

    async def main() -> None:
        async with central(site) as listener:
            await listener.subscribe("screening/v1/SITE-1/#", qos=1)
            # refused, then allowed: had the first been delivered, it would arrive first
            codes = await asyncio.to_thread(publish_as, site.lane(), LANE_ID, [other_lane.result, TOPICS.result])
            assert codes == [135, 0]  # Mosquitto 2.0 over MQTT 5: "Not authorized", then "Success"
            heard = await next_message(listener)
            assert heard.topic.value == TOPICS.result
    asyncio.run(main())


def test_an_outbox_message_the_acl_refuses_stays_stored_and_the_health_says_why(tmp_path: Path, site: Site) -> None:
    """A lane whose ACL is wrong loses nothing: the refused message (and what follows it) stays in the
    outbox, and the link's health names it; the allowed one before it is delivered and deleted."""
    path = tmp_path / "s.db"
    with Store(path) as store, store.transaction() as db:
        append_outbox(db, [OutboxMessage("ok-1", TOPICS.result, '{"n": 1}'),
                           OutboxMessage("forbidden", Topics("SITE-1", "lane-2").result, '{"n": 2}'),
                           OutboxMessage("ok-2", TOPICS.result, '{"n": 3}')])

    async def main() -> None:
        async with central(site) as listener:
            await listener.subscribe(f"{TOPICS.root}/items/#", qos=1)
            async with running_link(path, site.lane()) as link:
                async with asyncio.timeout(8):  # it connects, then the refusal ends the connection
                    while "refused by the broker" not in link.health.detail:
                        await asyncio.sleep(0.02)
                assert link.health.detail.endswith("outbox message 2 refused by the broker: Not authorized")
                heard = await next_message(listener)
                assert json.loads(bytes(heard.payload))["n"] == 1  # type: ignore[arg-type]
                await link.writer.drained()
                assert [m.msg_id for m in link.store.outbox_batch()] == ["forbidden", "ok-2"]
    asyncio.run(main())


def test_a_lane_reads_its_commands_and_the_sites_declarations_but_not_another_lanes_commands(site: Site) -> None:
    other_lane = Topics("SITE-1", "lane-2")

    async def main() -> None:
        async with client(site.lane(), LANE_ID) as lane, central(site) as sender:
            for topic in (TOPICS.ead_records, TOPICS.customs_instructions, "screening/v1/SITE-1/+/cmd/+"):
                await lane.subscribe(topic, qos=1)  # Mosquitto grants them all, and filters on delivery
            # another lane's command first: had it been delivered, it would arrive first
            for topic in (other_lane.commands.replace("+", "pause"), TOPICS.ead_records,
                          TOPICS.customs_instructions, TOPICS.commands.replace("+", "pause")):
                await sender.publish(topic, b"{}", qos=1)
            heard = [(await next_message(lane)).topic.value for _ in range(3)]
            assert heard == [TOPICS.ead_records, TOPICS.customs_instructions, f"{TOPICS.root}/cmd/pause"]
    asyncio.run(main())


def test_a_lane_cannot_take_over_another_lanes_session(site: Site) -> None:
    """use_username_as_clientid: the certificate's name is the client id, whatever the client asks for."""
    other = site.lane(client=site.pki.lane(OTHER_LANE_ID))

    async def main() -> None:
        async with client(other, OTHER_LANE_ID, timeout=5) as lane_2:
            async with client(site.lane(), OTHER_LANE_ID):  # lane 1's certificate, lane 2's client id
                await lane_2.publish(Topics("SITE-1", "lane-2").status, b"{}", qos=1)  # still connected
    asyncio.run(main())


async def connect_error(config: MqttSection) -> str:
    """The sentence for a connect that fails (a short timeout: TLS 1.3 refusals of a client certificate
    show up only as the CONNACK's timeout)."""
    with pytest.raises(aiomqtt.MqttError) as failed:
        async with client(config, LANE_ID, timeout=1):
            pass
    return explain(failed.value, config)


def test_the_broker_refusing_the_lanes_certificate_is_explained(site: Site, pki: Pki) -> None:
    stranger = pki.lane(LANE_ID, signed_by_other_ca=True)
    assert asyncio.run(connect_error(site.lane(client=stranger))) == (
        f"TLS: the broker at localhost:{site.tls_port} refused this lane's client certificate {stranger.cert}: "
        f"it is not signed by a CA the broker trusts (tlsv1 alert unknown ca)")
    without = MqttSection(host="localhost", port=site.tls_port, tls=True, ca_file=pki.ca)
    assert asyncio.run(connect_error(without)).startswith(
        f"TLS: the broker at localhost:{site.tls_port} requires a client certificate and none is configured")


def test_tls_against_a_plain_listener_and_nothing_listening_are_explained(broker: Broker, pki: Pki) -> None:
    plain = MqttSection(host="localhost", port=broker.port, tls=True, ca_file=pki.ca)
    assert asyncio.run(connect_error(plain)) == (
        f"TLS: the broker at localhost:{broker.port} broke off the TLS handshake: is that port a plain MQTT "
        f"listener? (TLS listeners are usually on 8883)")
    port = free_port()
    assert asyncio.run(connect_error(MqttSection(host="127.0.0.1", port=port))) == (
        f"nothing is listening at 127.0.0.1:{port} (connection refused): is the broker running, on that port?")


def test_a_certificate_file_that_cannot_be_used_is_a_configuration_error(pki: Pki, tmp_path: Path) -> None:
    lane = pki.lane(LANE_ID)

    def problem(**files: Path) -> str:
        with pytest.raises(ConfigError) as refused:
            tls_context(MqttSection.model_validate({"host": "localhost", "tls": True, "cert_file": lane.cert,
                                                    "key_file": lane.key, **files}))
        return str(refused.value)

    missing = tmp_path / "nowhere.crt"
    assert problem(ca_file=missing) == f"[mqtt] ca_file {missing}: cannot read it: No such file or directory"
    assert problem(key_file=missing) == f"[mqtt] key_file {missing}: cannot read it: No such file or directory"
    assert problem(ca_file=lane.key).startswith(f"[mqtt] ca_file {lane.key}: not a PEM CA certificate")
    assert problem(key_file=pki.broker.key) == (
        f"[mqtt] cert_file {lane.cert} / key_file {pki.broker.key}: the key does not belong to the certificate")
    encrypted = tmp_path / "encrypted.key"
    assert OPENSSL is not None
    subprocess.run([OPENSSL, "ec", "-in", str(lane.key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
                   check=True, capture_output=True)
    assert "the key is encrypted" in problem(key_file=encrypted)


def test_a_certificate_file_gone_at_a_reconnect_is_the_links_health_and_it_connects_once_it_is_back(
        tmp_path: Path, site: Site) -> None:
    """A renewal that moves the files away for a moment: the link says so and retries; the lane stays up."""
    renewed = tmp_path / "renewed"
    renewed.mkdir()
    lane = site.pki.lane(LANE_ID)
    cert, key = renewed / "lane.crt", renewed / "lane.key"
    config = site.lane(cert_file=cert, key_file=key)

    async def main() -> None:
        async with running_link(tmp_path / "s.db", config) as link:
            async with asyncio.timeout(8):
                while "cannot read it" not in link.health.detail:
                    await asyncio.sleep(0.02)
            assert link.health.detail == f"[mqtt] cert_file {cert}: cannot read it: No such file or directory"
            shutil.copy(lane.cert, cert)
            shutil.copy(lane.key, key)
            await asyncio.wait_for(link.connected.wait(), 8)
            assert link.health.state is HealthState.UP
    asyncio.run(main())
