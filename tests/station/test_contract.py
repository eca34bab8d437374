"""The MQTT contract: the schemas are valid and describe every field, the AsyncAPI document agrees with
them and with the topic map the station and the tests use, inbound parsing names what is wrong and never
crashes, and the station's payload builders make valid messages (the broker-side check of every test,
tests/contract_check.py, covers what really went over the broker)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from station import reviews
from station.alarms import alarm_payload
from station.alerts import Thumbnail, ThumbnailMissing, alert_payload
from station.contract import (
    BASE,
    ENVELOPE,
    INBOUND,
    SCHEMAS,
    ContractError,
    is_date_time,
    load,
    parse,
    problems,
    schema_for_topic,
)
from station.domain import Detected, Reason
from station.ead.record import EadRecord
from station.ead_quality import summarise
from station.lane.recorder import result_payload
from station.lane.status import StatusBoard
from station.mqtt_link import Topics, stamp
from station.presence import MESSAGE_SCHEMAS, Identity, LanePresence
from station.store import ItemRow, Store
from tests.station.ead.test_ead_record import record_dict

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ASYNCAPI = yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))
PARAMETERS = {"site": "SITE-1", "lane": "lane-1", "device": "plc", "name": "pause"}
TOPICS = Topics("SITE-1", "lane-1")
T0 = 1_790_000_000.0


def walk(node: object, path: str = "$") -> Iterator[tuple[str, Any]]:
    """Every (path, object) in a decoded JSON/YAML document."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def declarations(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object a schema declares the properties of (an if/then's are conditions, not declarations)."""
    for path, node in walk(schema):
        if isinstance(node.get("properties"), dict) and not re.search(r"\.(if|then)\b", path):
            yield path, node


# ---- the schema files ------------------------------------------------------------------------------


@pytest.mark.parametrize("schema_id", sorted(SCHEMAS))
def test_each_schema_is_a_valid_2020_12_schema_with_its_id_and_every_property_described(schema_id: str) -> None:
    schema = load(SCHEMAS[schema_id])
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{BASE}{schema_id}.schema.json"
    assert schema.get("title") and schema.get("description")
    undescribed = [f"{path}.{name}" for path, node in declarations(schema)
                   for name, prop in node["properties"].items() if not prop.get("description")]
    assert undescribed == [], "a central-systems developer reads these"
    if schema_id in INBOUND:  # a stranger's input: unknown keys are refused
        assert schema["additionalProperties"] is False
        assert all(node.get("additionalProperties") is False for _, node in declarations(schema))
    else:  # consumers must tolerate additions; every outbound message has the envelope
        assert schema["additionalProperties"] is True
        assert {"$ref": ENVELOPE} in schema["allOf"]
        assert schema["properties"]["schema"]["const"] == schema_id


def test_the_envelope_is_what_the_link_adds_and_what_every_stored_message_has() -> None:
    envelope = load(ENVELOPE)
    Draft202012Validator.check_schema(envelope)
    assert envelope["required"] == ["schema", "msg_id", "session", "seq", "historical", "site", "lane"]
    assert all(prop.get("description") for prop in envelope["properties"].values())


def test_docs_schemas_is_a_relative_link_to_the_package_copy_which_is_package_data() -> None:
    link = DOCS / "schemas"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert link.resolve() == ROOT / "station" / "schemas"
    files = {p.name for p in (ROOT / "station" / "schemas").glob("*.json")}
    assert files == {*SCHEMAS.values(), ENVELOPE}, "every file is in SCHEMAS, and every schema has its file"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "schemas/*.json" in project["tool"]["setuptools"]["package-data"]["station"]
    assert any(d.startswith("jsonschema") for d in project["project"]["dependencies"])


def test_importing_the_contract_is_cheap_and_reads_nothing() -> None:
    code = "import sys, station.contract; assert 'jsonschema' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---- the AsyncAPI document -------------------------------------------------------------------------


def message_schema(message: dict[str, Any]) -> str:
    """The payload file a channel's message names (`./schemas/x.schema.json`), through components."""
    if "$ref" in message:
        message = ASYNCAPI["components"]["messages"][message["$ref"].rsplit("/", 1)[1]]
    return str(message["payload"]["$ref"])


def test_the_asyncapi_document_is_3_0_with_the_project_version_and_both_servers() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert ASYNCAPI["asyncapi"] == "3.0.0"
    assert ASYNCAPI["info"]["version"] == project["project"]["version"]
    assert {s["protocol"] for s in ASYNCAPI["servers"].values()} == {"mqtt", "mqtts"}
    schemes = ASYNCAPI["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"userPassword", "X509"}
    for server in ASYNCAPI["servers"].values():
        assert all(ref["$ref"].rsplit("/", 1)[1] in schemes for ref in server["security"])


def test_every_reference_in_the_asyncapi_document_resolves_and_every_payload_file_is_a_valid_schema() -> None:
    for path, node in walk(ASYNCAPI):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            continue
        if ref.startswith("#/"):
            target: Any = ASYNCAPI
            for part in ref[2:].split("/"):
                target = target[part]  # KeyError: a dangling reference
        else:
            file = DOCS / ref
            assert file.is_file(), f"{path}: {ref}"
            Draft202012Validator.check_schema(json.loads(file.read_text(encoding="utf-8")))


def test_every_schema_is_some_channel_s_payload_and_each_channel_maps_to_it_as_the_station_does() -> None:
    referenced = set()
    for name, channel in ASYNCAPI["channels"].items():
        address = re.sub(r"\{(\w+)\}", lambda m: PARAMETERS[m[1]], channel["address"])
        assert set(re.findall(r"\{(\w+)\}", channel["address"])) == set(channel.get("parameters", {})), name
        for message in channel["messages"].values():
            file = Path(message_schema(message)).name
            referenced.add(file)
            assert SCHEMAS.get(str(schema_for_topic(address))) == file, (name, address, file)
    assert referenced == set(SCHEMAS.values())


def test_every_operation_names_a_channel_its_direction_and_its_qos_and_retain() -> None:
    operations = ASYNCAPI["operations"].values()
    for operation in operations:
        assert operation["action"] in {"send", "receive"}
        assert operation["channel"]["$ref"].rsplit("/", 1)[1] in ASYNCAPI["channels"]
        assert {"qos", "retain"} <= set(operation["bindings"]["mqtt"])
    used = {o["channel"]["$ref"].rsplit("/", 1)[1] for o in operations}
    assert used == set(ASYNCAPI["channels"])
    retained = {o["channel"]["$ref"].rsplit("/", 1)[1] for o in operations if o["bindings"]["mqtt"]["retain"]}
    assert retained == {"status", "birth", "deviceState"}


# ---- topics ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("topic", "schema_id"), [
    ("screening/v1/S/L/status", "screening/v1/status"),
    ("screening/v1/S/L/state/plc", "screening/v1/device-state"),
    ("screening/v1/S/L/state/lane", "screening/v1/device-state"),
    ("screening/v1/S/L/items/alert", "screening/v1/item-alert"),
    ("screening/v1/S/L/customs/screening_result", "customs/v1/screening-result"),
    ("screening/v1/S/L/cmd/pause", "screening/v1/command"),
    ("screening/v1/S/L/cmd/model-load", "screening/v1/command"),
    ("screening/v1/S/L/cmd/reply", "screening/v1/command-reply"),  # not a command named `reply`
    ("screening/v1/S/L/cmd/reply/central-7", "screening/v1/command-reply"),
    ("customs/v1/S/instructions", "customs/v1/instruction"),
    ("ead/v1/S/records", "ead/v1/record"),
    ("screening/v1/S/L/elsewhere", None),
    ("screening/v1/S/L/state/plc/extra", None),
    ("screening/v1/S/status", None),  # no lane
    ("screening/v1/+/+/status", None),  # a filter, not a topic
    ("ead/v1/S/L/records", None),
])
def test_each_topic_maps_to_its_schema(topic: str, schema_id: str | None) -> None:
    assert schema_for_topic(topic) == schema_id


def test_the_station_s_own_topics_and_the_birth_s_schema_names_agree_with_the_map() -> None:
    for suffix, schema_id in MESSAGE_SCHEMAS.items():
        topic = TOPICS.state("plc") if suffix == "state" else f"{TOPICS.root}/{suffix}"
        assert schema_for_topic(topic) == schema_id and schema_id in SCHEMAS, suffix
    assert schema_for_topic(TOPICS.ead_records) == "ead/v1/record"
    assert schema_for_topic(TOPICS.customs_instructions) == "customs/v1/instruction"
    assert schema_for_topic(TOPICS.commands.replace("+", "rebirth")) == "screening/v1/command"


# ---- date-time -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-12-04T10:00:00Z", "2026-12-04T10:00:00+00:00", "2026-12-04T10:00:00.5-05:30",
                                  "2026-12-04T10:00:00.123456+01:00"])
def test_a_date_time_with_its_zone_is_one(text: str) -> None:
    assert is_date_time(text)
    assert problems("screening/v1/command", {"cmd_id": "c", "issued_by": "o", "expires_at": text}) == []


@pytest.mark.parametrize("text", ["tomorrow", "2026-12-04T10:00:00", "2026-12-04 10:00:00Z", "2026-02-30T10:00:00Z",
                                  "2026-12-04T25:00:00Z", "2026-12-04", "1733306400", "2026-12-04T10:00:00+0000"])
def test_anything_else_is_not_a_date_time(text: str) -> None:
    """jsonschema checks `date-time` only with an optional package installed (and says nothing when it is
    not): the contract checks it itself."""
    assert not is_date_time(text)
    assert problems("screening/v1/command", {"cmd_id": "c", "issued_by": "o", "expires_at": text}) == [
        f"$.expires_at: {text!r} is not a 'date-time'"]


# ---- inbound: good and bad examples, and a stranger's bytes ---------------------------------------


def command(**fields: object) -> dict[str, object]:
    return {"cmd_id": "c1", "issued_by": "ops", "expires_at": "2026-12-04T10:00:00+00:00", **fields}


def instruction(**fields: object) -> dict[str, object]:
    return {"instruction_id": "ICS2-REF-1", "item_id": "RR473124829GB", "type": "hold", "issued_by": "customs-LHR",
            "issued_at": "2026-12-04T09:00:00Z", **fields}


GOOD = [
    ("screening/v1/command", command()),
    ("screening/v1/command", command(args={"path": "/models/v2"}, reply_to="screening/v1/S/L/cmd/reply/c",
                                     correlation="abc")),
    ("customs/v1/instruction", instruction()),
    ("customs/v1/instruction", instruction(type="screen", methods=["ETD", "PHS"], text="check the lining")),
    ("customs/v1/instruction", instruction(type="info", text="")),
    ("ead/v1/record", record_dict()),
    ("ead/v1/record", {"item_id": "RR473124829GB"}),
]

BAD = [  # (schema, payload, what the problem must name)
    ("screening/v1/command", command(expires_at="tomorrow"), "$.expires_at: 'tomorrow' is not a 'date-time'"),
    ("screening/v1/command", command(expires_at="2026-12-04T10:00:00"), "$.expires_at"),  # whose 10 o'clock?
    ("screening/v1/command", command(cmd_id=""), "$.cmd_id: '' should be non-empty"),
    ("screening/v1/command", command(cmd_id="x" * 65), "$.cmd_id"),
    ("screening/v1/command", command(extra=1), "$: Additional properties are not allowed ('extra' was unexpected)"),
    ("screening/v1/command", {"cmd_id": "c1", "issued_by": "ops"}, "$: 'expires_at' is a required property"),
    ("screening/v1/command", command(args=["path"]), "$.args: ['path'] is not of type 'object'"),
    ("screening/v1/command", command(reply_to="screening/v1/#"), "$.reply_to"),
    ("customs/v1/instruction", instruction(type="screen"), "$: 'methods' is a required property"),
    ("customs/v1/instruction", instruction(type="seize"), "$.type: 'seize' is not one of"),
    ("customs/v1/instruction", instruction(item_id="RR47312482GB"), "$.item_id"),
    ("customs/v1/instruction", instruction(type="screen", methods=["XRAY"]), "$.methods[0]"),
    ("customs/v1/instruction", instruction(issued_at="yesterday"), "$.issued_at: 'yesterday' is not a 'date-time'"),
    ("customs/v1/instruction", instruction(priority="high"), "'priority' was unexpected"),
    ("ead/v1/record", {"version": 2}, "$: 'item_id' is a required property"),
    ("ead/v1/record", {**record_dict(), "declared_at": "soon"}, "$.declared_at: 'soon' is not a 'date-time'"),
    ("ead/v1/record", {**record_dict(), "contents": [{"quantity": "2"}]},
     "$.contents[0].quantity: '2' is not of type 'integer'"),
    ("ead/v1/record", {**record_dict(), "sender": {"nickname": "x"}}, "'nickname' was unexpected"),
]


@pytest.mark.parametrize(("schema_id", "payload"), GOOD)
def test_a_good_inbound_payload_parses_to_itself(schema_id: str, payload: dict[str, object]) -> None:
    assert parse(schema_id, json.dumps(payload).encode()) == payload


@pytest.mark.parametrize(("schema_id", "payload", "named"), BAD)
def test_a_bad_inbound_payload_is_refused_naming_the_path_and_what_is_wrong(schema_id: str, payload: object,
                                                                           named: str) -> None:
    with pytest.raises(ContractError) as err:
        parse(schema_id, json.dumps(payload).encode())
    assert any(named in line for line in err.value.problems), err.value.problems
    assert named in str(err.value)  # the alarm's detail


def test_the_ead_schema_refuses_what_the_station_s_record_model_refuses() -> None:
    """The file is generated from the model (station/ead/schema.py): the two agree on the examples."""
    for schema_id, payload, _ in BAD:
        if schema_id == "ead/v1/record":
            with pytest.raises(ValueError):
                EadRecord.model_validate(payload)
    for schema_id, payload in GOOD:
        if schema_id == "ead/v1/record":
            EadRecord.model_validate(payload)


@pytest.mark.parametrize(("payload", "named"), [
    (b"\xff\xfe", "$: not UTF-8 (byte 0)"),
    (b"{", "$: not JSON"),
    (b"", "$: not JSON"),
    (b"[1]", "$: expected a JSON object, got an array"),
    (b'"pause"', "$: expected a JSON object, got a string"),
    (b"null", "$: expected a JSON object, got null"),
    (b'{"cmd_id": NaN}', "NaN is not a JSON number"),
    (b'{"cmd_id": "a", "cmd_id": "b", "issued_by": "o", "expires_at": "2026-12-04T10:00:00Z"}',
     "the key 'cmd_id' is given 2 times"),  # parsers differ on which one wins: refused
    (b"[" * 100_000, "nested too deeply"),
    (b'{"cmd_id": ' + b"9" * 5000 + b"}", "$: not JSON we take"),
    (b" " * (256 * 1024 + 1), "larger than"),
])
def test_bytes_that_are_not_one_json_object_are_refused_saying_why(payload: bytes, named: str) -> None:
    with pytest.raises(ContractError) as err:
        parse("screening/v1/command", payload)
    assert named in str(err.value), str(err.value)


def test_many_problems_are_named_up_to_a_bound_and_counted() -> None:
    pieces = [{"quantity": "x"}] * 100
    with pytest.raises(ContractError) as err:
        parse("ead/v1/record", json.dumps({"item_id": "RR473124829GB", "contents": pieces}).encode())
    assert len(err.value.problems) == 21 and err.value.problems[-1] == "... and 80 more"


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["cmd_id", "issued_by", "expires_at", "args", "type", "item_id", "x"])
                        | st.text(max_size=8), inner, max_size=6),
                    max_leaves=20)


@given(st.sampled_from(sorted(INBOUND)), st.one_of(st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode())))
def test_a_stranger_s_bytes_give_a_dict_or_a_contract_error_never_a_crash(schema_id: str, payload: bytes) -> None:
    try:
        assert isinstance(parse(schema_id, payload), dict)
    except ContractError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)


# ---- outbound: what the station's builders make, as the link publishes it -----------------------


def published(payload: dict[str, object] | str, *, seq: int = 7, historical: bool = False) -> object:
    """A stored payload as the link publishes it: session, seq and historical spliced in front."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return json.loads(stamp(text, session=3, seq=seq, historical=historical))


def item_row(decision: str = "INSPECT", image_sha256: str | None = "ab" * 32) -> ItemRow:
    return ItemRow(uid="u1", track_id=1, item_id="RR473124829GB", barcode="RR473124829GB", scan_id="s1",
                   image_path=None, image_sha256=image_sha256, decision=decision, routed=decision, score=0.91,
                   reasons=[{"code": "THREAT_DETECTED", "detail": "knife 0.91"}], ead_status="found", ead_version=1,
                   model_hash="cd" * 32, rules_version="default-1", decision_latency_ms=12.5, routed_at=T0)


def result(row: ItemRow | None = None, revision: int = 1) -> dict[str, object]:
    return result_payload(row or item_row(), TOPICS, detections=(Detected("knife", 0.91, (1, 2, 30, 40), threat=True),),
                          weight_kg=1.2, ead_findings=(Reason("VAGUE_DESCRIPTION", "gift", "contents"),),
                          revision=revision)


def test_item_results_are_valid_and_a_broken_one_is_not() -> None:
    for payload in (result(), result(item_row("CLEAR", image_sha256=None), revision=2)):
        assert problems("screening/v1/item-result", published(payload, historical=True)) == []
    broken = {**result(), "routed": "LOST", "image_sha256": "not-a-hash"}
    assert [p.split(":")[0] for p in problems("screening/v1/item-result", published(broken))] == [
        "$.image_sha256", "$.routed"]
    assert problems("screening/v1/item-result", result()) == [  # as stored: the link has not stamped it yet
        "$: 'session' is a required property", "$: 'seq' is a required property",
        "$: 'historical' is a required property"]


def test_item_alerts_of_each_event_are_valid() -> None:
    thumb = Thumbnail(256, 171, b"\xff\xd8jpeg\xff\xd9")
    new = alert_payload(result(), msg_id="u1/alert", event="new", changes=[], thumbnail=thumb)
    update = alert_payload(result(revision=2), msg_id="u1/alert/2", event="update",
                           changes=["reasons: +CUSTOMS_HOLD"], thumbnail=None)  # its new had it
    missing = alert_payload(result(), msg_id="u1/alert", event="new", changes=[],
                            thumbnail=ThumbnailMissing("no scan was kept for this item"))
    for payload in (new, update, missing):
        assert problems("screening/v1/item-alert", published(payload)) == [], payload["event"]
    unexplained = {**missing}
    del unexplained["thumbnail_missing"]
    assert problems("screening/v1/item-alert", published(unexplained)) == [
        "$: 'thumbnail_missing' is a required property"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "station.db") as opened:
        yield opened


def test_verdicts_and_undos_as_the_store_queues_them_are_valid(store: Store) -> None:
    pk = store.record_item(item_row(), [])
    topic = TOPICS.verdict
    given_ = reviews.record_verdict(store, pk, "THREAT", "alice", topic=topic, site=TOPICS.site, lane=TOPICS.lane,
                                    threat_class="knife", reason_code="DETECTOR_MISSED", note="in the lining",
                                    shown_at=T0 + 10, now=T0 + 14)
    reviews.undo_verdict(store, given_.id, "alice", topic=topic, site=TOPICS.site, lane=TOPICS.lane, now=T0 + 20)
    queued = store.outbox_batch()
    assert len(queued) >= 2
    for message in queued:
        schema_id = schema_for_topic(message.topic)
        assert schema_id is not None, message.topic
        assert problems(schema_id, published(message.payload)) == [], message.topic


def test_the_ead_quality_summary_is_valid() -> None:
    good = EadRecord.model_validate(record_dict())
    vague = EadRecord.model_validate({**record_dict(), "contents": [{"description": "gift"}]})
    summary = summarise([good, vague, vague], T0, T0 + 60)
    payload = {"msg_id": f"{TOPICS.site}/{TOPICS.lane}/ead-quality/{T0 + 60:.3f}", "site": TOPICS.site,
               "lane": TOPICS.lane, **summary}  # as publish_quality stores it
    assert problems("screening/v1/ead-quality", published(payload)) == []


def test_alarm_events_are_valid() -> None:
    for event, by in (("raised", None), ("acknowledged", "tom"), ("cleared", "station")):
        alarm = alarm_payload(TOPICS.site, TOPICS.lane, event, "SCANNER_DOWN", "unplugged", T0, by)
        assert problems("screening/v1/alarm", published(alarm)) == [], event
    assert problems("screening/v1/alarm", published({**alarm, "event": "forgotten"})) == [
        "$.event: 'forgotten' is not one of ['raised', 'acknowledged', 'cleared']"]


def test_status_birth_and_device_states_are_valid_as_the_link_publishes_them() -> None:
    identity = Identity(TOPICS, "ef" * 32, ("pause", "rebirth"), dict(MESSAGE_SCHEMAS))
    presence = LanePresence(identity, StatusBoard(), model_hash=lambda: None, rules_version=lambda: "default-1",
                            classes=lambda: ((), ()))
    live = [(TOPICS.status, presence.status(state)) for state in ("online", "stopping", "offline")]
    live += [(message.topic, message.payload) for message in presence.birth()]
    for seq, (topic, payload) in enumerate(live):
        stored = {"msg_id": f"station-SITE-1-lane-1/3/{seq}", **payload}  # the link adds msg_id to live messages
        schema_id = schema_for_topic(topic)
        assert schema_id is not None and problems(schema_id, published(stored, seq=seq)) == [], topic


def test_a_screening_result_and_a_command_reply_of_the_contract_are_valid() -> None:
    """Examples of the contract's fields (the builders are being written): the schemas take them."""
    head = {"msg_id": "m1", "site": TOPICS.site, "lane": TOPICS.lane}
    screening = {**head, "schema": "customs/v1/screening-result", "referral_reference": "ICS2-REF-1",
                 "item_id": "RR473124829GB", "result": "NO_THREAT_FOUND", "methods": ["XRY", "PHS"],
                 "person": "alice", "time": "2026-12-04T10:00:00+00:00",
                 "scan_reference": {"scan_id": "s1", "image_sha256": "ab" * 32, "item_uid": "u1"}, "remarks": ""}
    assert problems("customs/v1/screening-result", published(screening)) == []
    assert problems("customs/v1/screening-result", published({**screening, "methods": ["PHS"]})) == [
        "$.methods: ['PHS'] does not contain items matching the given schema"]  # XRY always
    reply = {**head, "schema": "screening/v1/command-reply", "cmd_id": "c1", "command": "pause",
             "correlation": None, "accepted": True, "result": {"state": "PAUSED"}}
    assert problems("screening/v1/command-reply", published(reply)) == []
    refused = {**reply, "accepted": False}
    del refused["result"]
    assert problems("screening/v1/command-reply", published(refused)) == ["$: 'reason' is a required property"]


def test_a_payload_on_the_wrong_topic_is_caught_by_its_schema_id() -> None:
    alarm = alarm_payload(TOPICS.site, TOPICS.lane, "raised", "SCANNER_DOWN", "unplugged", time.time(), None)
    found = problems("screening/v1/device-state", published(alarm))
    assert "$.schema: 'screening/v1/device-state' was expected" in found
