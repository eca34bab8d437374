"""`station ead check|import|show` on a real file with good, bad-JSON, non-object, invalid and defective lines.

Run in-process through a throwaway parser that registers the commands as `station` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from station.cli.ead import add_ead_commands
from tests.station.ead.test_ead_record import record_dict


def station(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="station")
    add_ead_commands(parser.add_subparsers(required=True))
    parsed = parser.parse_args(["ead", *args])
    code = parsed.handler(parsed)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ead_file(tmp_path: Path) -> Path:
    vague = record_dict(item_id="CP123456785FR")
    vague["contents"][0]["description"] = "gift"
    lines = [
        json.dumps(record_dict()),                                          # 1 clean
        "{not json",                                                        # 2 not JSON
        "[1, 2]",                                                           # 3 not an object
        json.dumps(record_dict(item_id="RR000000005GB", total_value="20")),  # 4 wrong type
        "",                                                                 # blank: skipped
        json.dumps(vague),                                                  # 6 a record with a finding
    ]
    path = tmp_path / "ead.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_check_json_reports_every_line_and_stores_nothing(capsys: pytest.CaptureFixture[str], ead_file: Path,
                                                         tmp_path: Path) -> None:
    code, out, err = station(capsys, "check", str(ead_file), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and "5 lines, 3 invalid, 1 with findings" in err
    assert [(r["line"], r["item_id"], r["valid"]) for r in rows] == [
        (1, "RR473124829GB", True), (2, None, False), (3, None, False), (4, "RR000000005GB", False),
        (6, "CP123456785FR", True)]
    assert rows[0]["reasons"] == []
    assert rows[1]["reasons"][0]["code"] == "EAD_INVALID" and rows[1]["reasons"][0]["message"].startswith("not JSON")
    assert rows[2]["reasons"] == [{"code": "EAD_INVALID", "field": "record",
                                   "message": "not a JSON object but an array"}]
    assert [(r["code"], r["field"]) for r in rows[3]["reasons"]] == [("EAD_INVALID", "total_value")]
    assert rows[4]["reasons"] == [{"code": "VAGUE_DESCRIPTION", "field": "contents[0].description",
                                   "message": "'gift' does not say what the goods are"}]
    assert not list(tmp_path.glob("**/*.db"))


def test_check_text_is_an_aligned_table(capsys: pytest.CaptureFixture[str], ead_file: Path) -> None:
    code, out, _ = station(capsys, "check", str(ead_file))
    header, *rows = out.splitlines()
    assert code == 1 and header.split() == ["LINE", "ITEM", "VALID", "CODE", "FIELD", "MESSAGE"]
    column = header.index("CODE")
    assert all(row[column - 2:column] == "  " and row[column] != " " for row in rows)
    assert any("VAGUE_DESCRIPTION" in row and "contents[0].description" in row for row in rows)


def test_check_of_a_clean_file_exits_0_and_a_missing_file_2(capsys: pytest.CaptureFixture[str],
                                                           tmp_path: Path) -> None:
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(record_dict()) + "\n")
    assert station(capsys, "check", str(clean))[0] == 0
    assert station(capsys, "check", str(tmp_path / "absent.jsonl"))[0] == 2


def run_import(capsys: pytest.CaptureFixture[str], path: Path, data_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    code, out, _ = station(capsys, "import", str(path), "--json", "--data-dir", str(data_dir))
    return code, [json.loads(line) for line in out.splitlines()]


def test_import_stores_valid_records_and_a_newer_version_is_never_overwritten(
        capsys: pytest.CaptureFixture[str], ead_file: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    code, rows = run_import(capsys, ead_file, data_dir)
    assert code == 1 and [(r["line"], r.get("stored")) for r in rows] == [
        (1, True), (2, None), (3, None), (4, None), (6, True)]

    amended = tmp_path / "v2.jsonl"
    amended.write_text(json.dumps(record_dict(version=2, total_gross_weight_kg=0.9)) + "\n")
    assert run_import(capsys, amended, data_dir) == (0, [{"line": 1, "item_id": "RR473124829GB", "valid": True,
                                                          "reasons": [], "stored": True}])
    _, rows = run_import(capsys, ead_file, data_dir)  # the old file again: version 1 must not come back
    assert rows[0]["stored"] is False

    code, out, _ = station(capsys, "show", "RR473124829GB", "--json", "--data-dir", str(data_dir))
    shown = json.loads(out)
    assert code == 0 and shown["record"]["version"] == 2 and shown["record"]["total_gross_weight_kg"] == 0.9
    assert shown["reasons"] == []


def test_show_prints_the_record_and_its_findings(capsys: pytest.CaptureFixture[str], ead_file: Path,
                                                 tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    run_import(capsys, ead_file, data_dir)
    code, out, _ = station(capsys, "show", "CP123456785FR", "--data-dir", str(data_dir))
    assert code == 0 and "CP123456785FR" in out and "2 x gift" in out
    assert "VAGUE_DESCRIPTION" in out and "contents[0].description" in out
    code, _, err = station(capsys, "show", "RR999999995GB", "--data-dir", str(data_dir))
    assert code == 1 and "no EAD record stored" in err
