"""The console benchmark's history part on a small seeded store, and its table from figures of each part."""

from pathlib import Path

from bench.console import CLIENTS, history_search, quantiles, table


def test_every_history_filter_is_timed_on_a_seeded_store(tmp_path: Path) -> None:
    history, filters = history_search(tmp_path, 3000, 2)
    assert set(history["search_ms"]) == set(filters) == set(history["rows"])
    assert all(q["n"] == 2 for q in history["search_ms"].values())
    assert history["rows"]["no filter (baseline)"] == 50 and history["rows"]["s10"] >= 1
    assert history["rows"]["since"] > 0 and history["rows"]["until"] > 0  # the days fall inside the history


def test_the_table_shows_every_part_and_flags_a_missed_target(tmp_path: Path) -> None:
    history, _ = history_search(tmp_path, 500, 1)
    ms = quantiles([1.0, 2.0, 3.0])
    lane = {"items": 100, "items_per_s": 2.0, "decision_latency_ms": ms, "decision_late": 0, "plc_poll_too_slow": 0,
            "faults": 0, "alarms": {}, "alarms_before": {}, "resets": 0, "end_state": "STOPPED", "loop_stall_ms": 9.0}
    http = {kind: ms for kind in [*CLIENTS, "image_cold_first_view", "bare_encode"]}
    result = {"measured_s": 60.0, "rounds": 3, "repeats": 1, "http": http | {"image_cached": quantiles([30.0])},
              "decision_to_browser_ms": ms, "snapshot_to_event_ms": ms, "history": history,
              "history_page": {name: ms for name in [*history["search_ms"], "static"]},
              "open": {"lane": lane}, "closed": {"lane": lane}, "latency_ok": True}
    text = "\n".join(table(result))
    assert "image cached (same URL again)" in text and "p99 <= 20 ms: MISSED" in text
    assert "decision -> row in the browser" in text and "PLC_FAULT+FALSE_ALARM+chen" in text
    assert "decision latency p99 (ms)" in text and "note:" not in text
