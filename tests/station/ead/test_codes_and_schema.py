"""The code tables load as published, and station/schemas/ead-record.schema.json is the model's schema."""

from __future__ import annotations

import json
from pathlib import Path

from station.ead.codes import (
    countries,
    currencies,
    eur_rates,
    service_indicators,
    threat_accounts,
)
from station.ead.record import EadRecord
from station.ead.schema import SCHEMA_PATH, ead_schema, main
from station.kernel.detector import DEFAULT_MODEL
from tests.station.ead.test_ead_record import record_dict


def test_iso_3166_table() -> None:
    table = countries()
    assert len(table) == 249 and table["GB"] == "United Kingdom" and table["CN"] == "China"
    assert "UK" not in table and "EU" not in table  # reserved, not assigned


def test_iso_4217_table_with_minor_units() -> None:
    table = currencies()
    assert (table["EUR"], table["JPY"], table["KWD"], table["CLF"], table["XAU"]) == (2, 0, 3, 4, None)
    assert "HRK" not in table and {"ZWG", "XCG"} <= set(table)


def test_every_rate_and_the_s10_ranges_refer_to_known_codes() -> None:
    assert set(eur_rates()) <= set(currencies()) and eur_rates()["EUR"] == 1.0
    assert sorted(service_indicators()) == [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    assert {k for k, v in service_indicators().items() if v == "reserved"} == set("JKSTWXY")


def test_every_detector_class_has_what_accounts_for_it() -> None:
    manifest = json.loads((DEFAULT_MODEL / "manifest.json").read_text())
    table = threat_accounts()
    assert set(manifest["threat_classes"]) == set(table)
    assert all(accounts.hs_prefixes and accounts.keywords for accounts in table.values())
    assert all(p.isdigit() and len(p) >= 4 for accounts in table.values() for p in accounts.hs_prefixes)


def test_the_schema_file_is_the_models_schema() -> None:
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == ead_schema(), \
        f"{SCHEMA_PATH} is out of date: run python -m station.ead.schema"
    assert main(["--check"]) == 0


def test_the_schema_describes_every_field_and_forbids_others() -> None:
    schema = ead_schema()
    assert set(schema["properties"]) == set(EadRecord.model_fields) == set(record_dict())
    assert schema["additionalProperties"] is False and schema["required"] == ["item_id"]
    for model in (schema, *schema["$defs"].values()):
        assert all(prop.get("description") for prop in model["properties"].values())


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "ead.schema.json"
    stale.write_text("{}\n")
    assert main(["--check", "--out", str(stale)]) == 1
    assert main(["--out", str(stale)]) == 0 and main(["--check", "--out", str(stale)]) == 0
