"""The MQTT contract: the schemas are valid, the AsyncAPI document agrees with them and with the topic
map the station and the tests use, inbound parsing names what is wrong and never crashes, and the
payload builders' messages are valid (the broker-side check of every test covers the rest)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from station.alarms import alarm_payload
from station.contract import SCHEMAS, ContractError, load, parse, problems, schema_for_topic
from station.lane.recorder import result_payload
from station.mqtt_link import Topics, stamp
from station.store import ItemRow

DOCS = Path(__file__).resolve().parents[2] / "docs"
ASYNCAPI = yaml.safe_load((DOCS / "asyncapi.yaml").read_text())
SAMPLE = {"site": "SITE-1", "lane": "lane-1", "device": "plc", "name": "pause"}


def test_every_schema_is_a_valid_draft_2020_12_schema_and_inbound_ones_describe_every_field() -> None:
    for name in [*SCHEMAS.values(), "envelope"]:
        schema = load(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith(f"/{name}.schema.json")
        assert schema.get("description"), name
    command = load("command")
    assert command["additionalProperties"] is False  # a stranger's input: unknown keys refused
    assert all("description" in v for v in command["properties"].values())


def test_docs_schemas_is_the_package_copy() -> None:
    assert (DOCS / "schemas").resolve() == (Path(__file__).resolve().parents[2] / "station" / "schemas")


def test_the_asyncapi_document_names_every_schema_and_maps_each_channel_as_the_station_does() -> None:
    assert ASYNCAPI["asyncapi"].startswith("3.")
    messages = ASYNCAPI["components"]["messages"]
    referenced = set()
    for channel, spec in ASYNCAPI["channels"].items():
        address = re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m[1]], spec["address"])
        for message in spec["messages"].values():
            body = messages[message["$ref"].rsplit("/", 1)[1]] if "$ref" in message else message
            ref = body["payload"]["$ref"]
            assert (DOCS / ref).is_file(), ref
            referenced.add(Path(ref).name)
            if ref.startswith("./schemas/"):
                schema_id = json.loads((DOCS / ref).read_text())["$id"].rsplit("/", 1)[1].removesuffix(".schema.json")
                assert SCHEMAS[str(schema_for_topic(address))] == schema_id, (channel, address)
    assert {f"{name}.schema.json" for name in SCHEMAS.values()} <= referenced
    for operation in ASYNCAPI["operations"].values():
        assert operation["channel"]["$ref"].rsplit("/", 1)[1] in ASYNCAPI["channels"]


def test_a_reply_topic_is_not_mistaken_for_a_command_named_reply() -> None:
    assert schema_for_topic("screening/v1/S/L/cmd/reply") == "screening/v1/command-reply"
    assert schema_for_topic("screening/v1/S/L/cmd/reply/central-7") == "screening/v1/command-reply"
    assert schema_for_topic("screening/v1/S/L/cmd/pause") == "screening/v1/command"
    assert schema_for_topic("screening/v1/S/L/elsewhere") is None


def command(**fields: object) -> bytes:
    return json.dumps({"cmd_id": "c1", "issued_by": "ops", "expires_at": "2026-12-04T10:00:00+00:00", **fields}).encode()


def test_a_good_command_parses_and_each_bad_one_names_its_field() -> None:
    assert parse("screening/v1/command", command(args={"path": "/m"}))["args"] == {"path": "/m"}
    cases = {
        command(expires_at="tomorrow"): "$.expires_at",
        command(expires_at="2026-12-04T10:00:00"): "$.expires_at",  # no zone: whose 10 o'clock?
        command(cmd_id=""): "$.cmd_id",
        command(extra=1): "'extra' was unexpected",
        b"\xff\xfe": "not UTF-8",
        b"{": "not JSON",
        b"[1]": "expected a JSON object",
    }
    for payload, named in cases.items():
        with pytest.raises(ContractError) as err:
            parse("screening/v1/command", payload)
        assert named in str(err.value), (payload, str(err.value))


@given(st.one_of(st.binary(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                              lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                                          max_size=4),
                              max_leaves=10).map(lambda v: json.dumps(v).encode())))
def test_parsing_a_strangers_bytes_gives_a_dict_or_a_contract_error_never_a_crash(payload: bytes) -> None:
    try:
        assert isinstance(parse("screening/v1/command", payload), dict)
    except ContractError as err:
        assert err.problems


def published(payload: dict[str, object]) -> dict[str, object]:
    """The payload as the link publishes it."""
    return dict(json.loads(stamp(json.dumps(payload), session=3, seq=7, historical=False)))


def test_the_station_s_builders_make_valid_messages() -> None:
    row = ItemRow(uid="u1", track_id=1, item_id="RR123456785GB", barcode="RR123456785GB", scan_id="s1",
                  image_path=None, image_sha256="ab" * 32, decision="INSPECT", routed="INSPECT", score=0.9,
                  reasons=[{"code": "THREAT_DETECTED", "detail": "knife 0.91"}], ead_status="found", ead_version=1,
                  model_hash="cd" * 32, rules_version="default-1", decision_latency_ms=12.5, routed_at=time.time())
    result = result_payload(row, Topics("S", "L"), detections=(), weight_kg=1.2, ead_findings=())
    assert problems("screening/v1/item-result", published(result)) == []
    alarm = alarm_payload("S", "L", "acknowledged", "SCANNER_DOWN", "unplugged", time.time(), "tom")
    assert problems("screening/v1/alarm", published(alarm)) == []
    assert problems("screening/v1/alarm", published({**alarm, "event": "forgotten"}))  # it can fail
