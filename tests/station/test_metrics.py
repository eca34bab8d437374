"""`/metrics` (station/metrics.py): scraped over HTTP from a real station on its simulated lane, and judged
against the station's own store; the alerting rules and the dashboard that read it (deploy/)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from simulator.faults import Fault
from station.cli.simulated import run_simulated
from station.config import Config, LaneSection, SimulatorSection, StorageSection, WebSection
from station.console.app import Console
from station.console.server import LaneAccess
from station.daemon import Lane
from station.lane.status import Counters, LaneStatus, ModelInfo, Outbox, StatusBoard
from station.metrics import METRICS, PROCESS_PREFIX, Buckets, LaneMetrics, StationMetrics
from station.mqtt_link import Topics
from station.version import VERSION
from tests.test_faults import operator, stored, until

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMTOOL = shutil.which("promtool")
ITEMS = 8
lane_run = pytest.mark.slow  # the tests that read one run of the whole lane (~15 s): daemon and simulator

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Get = Callable[[str], httpx.Response]


def samples_of(text: str) -> tuple[dict[str, str], Samples]:
    """The families (name -> type) and every sample of a scrape, parsed as Prometheus parses it."""
    families, found = {}, {}
    for family in text_string_to_metric_families(text):
        families[family.name + ("_total" if family.type == "counter" else "")] = family.type
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return families, found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    """`label`'s value -> the sample's, for the samples of `name` that carry only that label."""
    return {dict(k)[label]: v for (n, k), v in samples.items() if n == name and {x for x, _ in k} == {label}}


# ---- a real station, scraped while it runs ---------------------------------------------------------


def lane_config(tmp_path: Path) -> Config:
    """A fast lane with no broker (so the outbox only fills), threats and missing declarations to INSPECT."""
    return Config(
        lane=LaneSection(belt_speed_mm_s=1500),
        storage=StorageSection(data_dir=tmp_path),
        web=WebSection(port=0),
        simulator=SimulatorSection(seed=3, item_rate_per_s=3.0, threat_share=0.3, noread_share=0.0,
                                   invalid_s10_share=0.0, ead_missing_share=0.15, ead_defect_share=0.0,
                                   ead_late_share=0.0),
    )


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run: scrapes while the lane runs, once it stands (with what the store says then), and after the
    scanner's cable is pulled."""
    tmp_path = tmp_path_factory.mktemp("metrics")
    seen: dict[str, Any] = {}

    async def control(lane: Lane) -> None:
        assert lane.console_url is not None and lane.sim is not None
        async with httpx.AsyncClient(base_url=lane.console_url, timeout=10) as client:
            async def scrape() -> str:
                reply = await client.get("metrics")  # no session: Prometheus has none
                assert reply.status_code == 200, reply.text
                assert reply.headers["content-type"] == CONTENT_TYPE_LATEST  # Prometheus's text format
                return reply.text

            async def scrape_until(what: str, ok: Any, timeout: float = 5.0) -> str:
                deadline = time.monotonic() + timeout
                while not ok(samples_of(text := await scrape())[1]):
                    assert time.monotonic() < deadline, f"no scrape within {timeout} s where {what}"
                    await asyncio.sleep(0.05)
                return text

            await stored(lane, 2)
            lane.runtime.longest_stall_s = 0.0
            started = time.perf_counter()
            for _ in range(20):  # back to back, while the belt runs and items are decided
                seen["running"] = await scrape()
            seen["scrape_s"] = (time.perf_counter() - started) / 20
            seen["stall_s"] = lane.runtime.longest_stall_s
            await stored(lane, ITEMS)
            operator(lane, "stop")
            await until(lambda: not lane.sim.belt.running, why="belt stopped")
            await lane.runtime.writer.drained()
            store = lane.store
            seen["stopped"] = await scrape_until(
                "the scrape agrees with the store on items and outbox",
                lambda s: sum(labelled(s, "station_items_total", "decision").values()) == store.item_count()
                and value(s, "station_outbox_messages") == store.outbox_count())
            seen["items"] = [dict(r) for r in store.items()]
            seen["outbox"] = store.outbox_count()
            seen["ead"] = store.db.execute("SELECT count(*) FROM ead_records").fetchone()[0]
            seen["model_hash"] = lane.runtime.model.hash if lane.runtime.model else None
            await lane.sim.inject(Fault("scanner-unplug"))
            seen["unplugged"] = await scrape_until(
                "the scanner is down, with its alarm",
                lambda s: value(s, "station_device_up", device="scanner") == 0
                and value(s, "station_alarms_active", code="SCANNER_DOWN") == 1)

    result = asyncio.run(run_simulated(lane_config(tmp_path), control=control))
    seen["store_path"] = result.store_path
    return seen


@lane_run
def test_items_by_decision_and_inspect_reasons_are_the_stores(scraped: dict[str, Any]) -> None:
    _, s = samples_of(scraped["stopped"])
    items = scraped["items"]
    assert len(items) >= ITEMS
    assert labelled(s, "station_items_total", "decision") == {
        d: sum(i["decision"] == d for i in items) for d in ("CLEAR", "INSPECT")}
    reasons = labelled(s, "station_inspect_reasons_total", "reason")
    stored_reasons: dict[str, int] = {}
    for item in (i for i in items if i["decision"] == "INSPECT"):
        for code in {r["code"] for r in json.loads(item["reasons"])}:
            stored_reasons[code] = stored_reasons.get(code, 0) + 1
    assert stored_reasons, "the run must have inspected something"
    assert {code: n for code, n in reasons.items() if n} == stored_reasons
    assert reasons["SCAN_MISSING"] == stored_reasons.get("SCAN_MISSING", 0)  # the station's own codes are all there


@lane_run
def test_the_outbox_is_the_stores_with_no_broker_and_mqtt_is_down(scraped: dict[str, Any]) -> None:
    _, s = samples_of(scraped["stopped"])
    assert value(s, "station_outbox_messages") == scraped["outbox"] > 0
    age = value(s, "station_outbox_oldest_age_seconds")
    assert age is not None and 0 < age < 120
    assert value(s, "station_outbox_published_total") == 0
    assert value(s, "station_device_up", device="mqtt") == 0


@lane_run
def test_devices_are_up_on_a_healthy_lane_and_the_unplugged_scanner_is_down(scraped: dict[str, Any]) -> None:
    _, running = samples_of(scraped["running"])
    for device in ("plc", "scanner", "barcode", "detector", "ead"):
        assert value(running, "station_device_up", device=device) == 1, device
        last = value(running, "station_device_last_success_timestamp_seconds", device=device)
        assert device == "ead" or (last is not None and time.time() - last < 300), device
    assert value(running, "station_lane_state", state="RUNNING") == 1
    assert sum(labelled(running, "station_lane_state", "state").values()) == 1
    _, unplugged = samples_of(scraped["unplugged"])
    assert value(unplugged, "station_device_state", device="scanner", state="down") == 1
    assert value(unplugged, "station_device_state", device="scanner", state="up") == 0
    assert value(unplugged, "station_device_up", device="plc") == 1
    assert value(unplugged, "station_alarms_active", code="SCANNER_DOWN") == 1
    _, stopped = samples_of(scraped["stopped"])
    assert value(stopped, "station_lane_state", state="STOPPED") == 1
    assert "SCANNER_DOWN" not in labelled(stopped, "station_alarms_active", "code")  # the lane's own may be there


@lane_run
def test_the_model_hash_and_the_version_are_the_ones_items_record(scraped: dict[str, Any]) -> None:
    _, s = samples_of(scraped["stopped"])
    hashes = {i["model_hash"] for i in scraped["items"] if i["model_hash"]}
    assert hashes == {scraped["model_hash"]}
    model = [dict(k) for (n, k), v in s.items() if n == "station_model_info" and v == 1]
    assert len(model) == 1 and model[0]["hash"] == scraped["model_hash"] and model[0]["name"]
    assert value(s, "station_lane_manual_only") == 0
    assert value(s, "station_build_info", version=VERSION) == 1
    rules = {i["rules_version"] for i in scraped["items"]}
    assert [dict(k)["version"] for (n, k) in s if n == "station_rules_info"] == list(rules)
    assert value(s, "station_up") == 1


@lane_run
def test_latency_histograms_count_what_was_decided_inferred_and_polled(scraped: dict[str, Any]) -> None:
    _, s = samples_of(scraped["stopped"])
    latencies = [i["decision_latency_ms"] for i in scraped["items"] if i["decision_latency_ms"] is not None]
    assert latencies
    count = value(s, "station_decision_latency_seconds_count")
    assert count == len(latencies) == value(s, "station_decision_latency_seconds_bucket", le="+Inf")
    assert math.isclose(value(s, "station_decision_latency_seconds_sum") or 0, sum(latencies) / 1000, rel_tol=1e-9)
    below = value(s, "station_decision_latency_seconds_bucket", le="0.15")
    assert below == sum(ms <= 150 for ms in latencies)
    # No item is cleared without a finished inference.
    cleared = sum(i["decision"] == "CLEAR" for i in scraped["items"])
    assert (value(s, "station_inference_seconds_count") or 0) >= cleared > 0
    polls = value(s, "station_plc_round_trip_seconds_count") or 0
    assert polls > 50 and 0 < (value(s, "station_plc_round_trip_seconds_sum") or 0) / polls < 0.5
    assert value(s, "station_serial_frames_total", device="scanner") >= 2 * ITEMS  # type: ignore[operator]
    assert value(s, "station_serial_frames_total", device="barcode") >= ITEMS  # type: ignore[operator]


@lane_run
def test_the_ead_cache_disk_and_floor_are_reported(scraped: dict[str, Any]) -> None:
    _, s = samples_of(scraped["stopped"])
    assert value(s, "station_ead_records") == scraped["ead"] > 0
    lag = value(s, "station_ead_lag_seconds")
    assert lag is not None and 0 <= lag < 300
    free = value(s, "station_disk_free_bytes") or 0
    assert abs(free - shutil.disk_usage(scraped["store_path"].parent).free) < 0.1 * free + 2**30
    assert value(s, "station_disk_min_free_bytes") == 64 * 2**20


@lane_run
def test_every_family_is_declared_and_no_label_names_an_item(scraped: dict[str, Any]) -> None:
    families, s = samples_of(scraped["stopped"])
    station = {name: kind for name, kind in families.items() if not name.startswith(PROCESS_PREFIX)}
    assert station == dict(METRICS)
    assert any(name.startswith(PROCESS_PREFIX) for name in families)
    ids = {str(i[k]) for i in scraped["items"] for k in ("item_id", "barcode", "scan_id", "uid") if i[k]}
    values = {v for _, labels in s for _, v in labels}
    assert not values & ids
    assert not [v for v in values if re.fullmatch(r"[A-Z]{2}\d{9}[A-Z]{2}", v)]


@lane_run
def test_scrapes_do_not_stall_the_lanes_loop(scraped: dict[str, Any]) -> None:
    print(f"scrape {scraped['scrape_s'] * 1000:.1f} ms on average; the loop's longest stall meanwhile "
          f"{scraped['stall_s'] * 1000:.1f} ms")
    assert scraped["stall_s"] < 0.1  # the loop's own warning threshold (LaneRuntime.watch_loop)


@lane_run
def test_promtool_accepts_the_scrape(scraped: dict[str, Any]) -> None:
    promtool()
    assert PROMTOOL is not None
    for text in (scraped["running"], scraped["stopped"]):
        done = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr


# ---- the route, without a lane ---------------------------------------------------------------------


def status(board_seq: int = 1, **changes: Any) -> LaneStatus:
    base = LaneStatus(board_seq, time.time(), "S1", "L1", "RUNNING", None, False, ModelInfo("m", "1", "abc"), (),
                      Outbox(3, time.time() - 5, 0), Counters(4, 3, 1, (("EAD_MISSING", 1),)), (), (), 0.0, 0)
    return replace(base, **changes)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Any]:
    """A console over a lane that is only a status board, as the daemon builds it (metrics on or off)."""
    made: list[Console] = []
    sockets: list[socket.socket] = []

    def make(metrics: bool = True) -> tuple[Get, StatusBoard]:
        board = StatusBoard()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        access = LaneAccess(board=board, control=None, writer=None, topics=Topics("S1", "L1"),  # type: ignore[arg-type]
                            lane=LaneSection(), notify=lambda: None, registers=dict, frames=dict,
                            threat_classes=tuple, lane_metrics=LaneMetrics())
        made.append(Console(access, tmp_path / "station.db", tmp_path / "images", WebSection(metrics=metrics), sock))
        app = made[-1].app

        def get(path: str) -> httpx.Response:  # the app on a loop of this test's own, as uvicorn would run it
            async def fetch() -> httpx.Response:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lane") as c:
                    return await c.get(path)
            return asyncio.run(fetch())
        return get, board

    yield make
    for c in made:
        c.close()
    for s in sockets:
        s.close()


def test_metrics_need_no_login_while_pages_do_and_can_be_turned_off(console: Any) -> None:
    get, board = console()
    before = get("/metrics")
    assert before.status_code == 200 and value(samples_of(before.text)[1], "station_up") == 0
    board.publish(status())
    _, s = samples_of(get("/metrics").text)
    assert value(s, "station_up") == 1 and value(s, "station_outbox_messages") == 3
    assert value(s, "station_inspect_reasons_total", reason="EAD_MISSING") == 1
    assert get("/").status_code == 303  # the console's pages still want a login
    off, _ = console(metrics=False)
    assert off("/metrics").status_code == 404


def test_two_stations_in_one_process_keep_their_own_series(tmp_path: Path) -> None:
    boards = [StatusBoard(), StatusBoard()]
    boards[0].publish(status(counters=Counters(5, 5, 0)))
    boards[1].publish(status(counters=Counters(2, 0, 2)))
    lanes = [LaneMetrics(), LaneMetrics()]
    lanes[0].decided(12.0)
    stations = [StationMetrics(b, m, data_dir=tmp_path, serial=dict, rules_version=lambda: "r",
                               min_free_bytes=0) for b, m in zip(boards, lanes, strict=True)]

    async def read(job: Any) -> Any:
        from station.store import Store
        with Store(tmp_path / "station.db") as store:
            return job(store)

    texts = [asyncio.run(st.scrape(read)) for st in stations]
    first, second = (samples_of(t.decode())[1] for t in texts)
    assert value(first, "station_items_total", decision="CLEAR") == 5 and value(first, "station_ead_records") == 0
    assert value(second, "station_items_total", decision="INSPECT") == 2
    assert value(first, "station_decision_latency_seconds_count") == 1
    assert value(second, "station_decision_latency_seconds_count") == 0


def test_a_value_on_a_bucket_bound_is_in_that_bucket() -> None:
    buckets = Buckets((0.1, 0.2))
    for v in (0.1, 0.15, 0.2, 0.3):
        buckets.observe(v)
    family = buckets.family("x_seconds", "x")
    assert [(s.labels["le"], s.value) for s in family.samples if s.name == "x_seconds_bucket"] == [
        ("0.1", 1), ("0.2", 3), ("+Inf", 4)]


# ---- the alerting rules and the dashboard ----------------------------------------------------------


def promtool() -> None:
    if PROMTOOL is None:
        print("promtool is not installed (apt-get install prometheus): the Prometheus checks are skipped")
        pytest.skip("promtool is not installed (apt-get install prometheus)")


def test_the_alerting_rules_are_valid_and_their_unit_tests_pass() -> None:
    promtool()
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(DEPLOY / "prometheus-rules.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", str(DEPLOY / "prometheus-rules.test.yml")],
                            capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())["groups"] for r in g["rules"]]


def test_the_rules_cover_what_a_site_must_hear_of_each_with_severity_and_advice() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert {"StationDown", "StationOutboxGrowing", "StationDiskLow", "StationModelManualOnly",
            "StationInspectRateAbnormal"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule.get("for") and rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 80, name
    for rule in rules():
        assert metric_names(rule["expr"]) <= exported(), rule


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression reads: what is left once strings, label
    matchers, ranges, grouping lists, functions, keywords, numbers and durations are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for found in re.finditer(r"(?<![A-Za-z0-9_:.$])\$?[A-Za-z_:][A-Za-z0-9_:]*(?=\s*(\(?))", text):
        word = found.group(0)
        if word.startswith("$") or found.group(1) == "(" or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def exported() -> set[str]:
    """What PromQL may name: the station's series (a histogram's as _bucket, _sum, _count), `up`, and the
    recording rules of the rules file."""
    names = {"up"} | {r["record"] for r in rules() if "record" in r}
    for name, kind in METRICS.items():
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names


def test_metric_names_are_read_out_of_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (le) (rate(station_decision_latency_seconds_bucket{site="$site", '
            'lane=~"a|b"}[$__rate_interval]))) * 60 > 0 and on (instance) up == 1 or station:x:y offset 5m')
    assert metric_names(expr) == {"station_decision_latency_seconds_bucket", "up", "station:x:y"}


def test_the_dashboard_reads_only_what_the_station_exports_for_one_site_and_lane() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"site", "lane"} <= variables
    panels = dashboard["panels"]
    titles = " ".join(p["title"].lower() for p in panels)
    for wanted in ("lane state", "by decision", "inspect share", "decision latency", "inference latency",
                   "outbox depth", "oldest age", "device states", "alarms", "disk free", "ead lag"):
        assert wanted in titles, wanted
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert metric_names(expr) <= exported(), (panel["title"], metric_names(expr) - exported())
            assert 'site="$site"' in expr and 'lane="$lane"' in expr, (panel["title"], expr)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))


def test_the_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, with Grafana's variables filled in as Grafana does, through promtool's parser
    (as recording rules of a throwaway rules file)."""
    promtool()
    assert PROMTOOL is not None
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    filled = [e.replace("$__rate_interval", "1m").replace("$site", "S1").replace("$lane", "L1") for e in exprs]
    rules_file = tmp_path / "dashboard-rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(filled)]}]}))
    checked = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
