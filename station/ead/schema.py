"""The JSON Schema of an EAD record, generated from the pydantic model so the two cannot drift.

`python -m station.ead.schema` writes station/schemas/ead-record.schema.json (the MQTT contract's schema of
`ead/v1/{site}/records`, also docs/schemas/); `--check` exits 1 when the file differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from station.ead.record import EadRecord

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "ead-record.schema.json"
SCHEMA_ID = "https://schemas.screening.example/ead/v1/record.schema.json"


def ead_schema() -> dict[str, Any]:
    """The record's JSON Schema (draft 2020-12), as pydantic derives it, with an id and a description."""
    schema = EadRecord.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "description": "The CN 23 customs declaration of one postal item (UPU ITMATT), one JSON object per line "
                       "of an EAD file or per message on ead/v1/{site}/records. Fields customs needs may be "
                       "empty here; the station reports them as EAD_INCOMPLETE.",
    }


def schema_text() -> str:
    return json.dumps(ead_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m station.ead.schema", description=__doc__)
    parser.add_argument("--out", type=Path, default=SCHEMA_PATH, help=f"where to write (default: {SCHEMA_PATH})")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file is out of date")
    args = parser.parse_args(argv)
    text = schema_text()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m station.ead.schema", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
