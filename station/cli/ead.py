"""`station ead check|import|show`: EAD files checked, loaded and looked at from the command line.

Exit codes as for every `station` command: 0 all lines were records (findings or not), 1 some line was
invalid or the item is not stored, 2 the command could not run (no such file, bad configuration).
Text output is an aligned table, one row per reason; `--json` prints one object per line of the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from station.cli.common import config_args, load

if TYPE_CHECKING:  # handlers import lazily, so that `station --help` stays fast
    from station.ead.record import Party
    from station.intake import LineReport

_COLUMNS = "{line:>5}  {item:<13}  {valid:<5}  {code:<21}  {field:<26}  {message}"


def add_ead_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `ead` and its subcommands on the `station` command's subparsers."""

    ead = sub.add_parser("ead", help="electronic advance data (CN 23 declarations)")
    actions = ead.add_subparsers(required=True, metavar="ACTION")

    check = actions.add_parser("check", help="validate a JSON-lines file of EAD records without storing it")
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="one JSON object per line: item_id, valid, reasons")
    check.set_defaults(handler=_check)

    imp = actions.add_parser("import", help="store the valid records of a JSON-lines file; report every line")
    config_args(imp)
    imp.add_argument("file", type=Path)
    imp.add_argument("--json", action="store_true", help="one JSON object per line: item_id, valid, stored, reasons")
    imp.set_defaults(handler=_import)

    show = actions.add_parser("show", help="the stored record of an item and its findings")
    config_args(show)
    show.add_argument("item_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object: record and reasons")
    show.set_defaults(handler=_show)


def _check(args: argparse.Namespace) -> int:
    from station.intake import check_file

    if not args.file.is_file():
        print(f"{args.file}: no such file", file=sys.stderr)
        return 2
    return _report(check_file(args.file), args.json)


def _import(args: argparse.Namespace) -> int:
    from station.intake import import_file
    from station.store import Store

    config = load(args)
    if not args.file.is_file():
        print(f"{args.file}: no such file", file=sys.stderr)
        return 2
    started = time.time()
    with Store(config.storage.data_dir / "station.db") as store:
        reports = import_file(store, args.file, source=str(args.file))
    code = _report(reports, args.json)
    _tell_running_station(config.storage.data_dir, started, args.file)
    return code


def _tell_running_station(data_dir: Path, since: float, file: Path) -> None:
    """A station running on this data folder hears of the import, so that the declarations reach items
    on its belt and decide again items it stored without them (station/lane/runtime.py)."""
    import asyncio

    from station.control import send, socket_path
    from station.lock import holder

    if (pid := holder(data_dir)) is None:
        return
    try:
        reply = asyncio.run(send(socket_path(data_dir), "ead-imported", 120.0, since=since, file=str(file.resolve())))
    except (OSError, TimeoutError) as err:
        print(f"warning: the running station (PID {pid}) was not told of this import ({err}): items on its belt "
              "go on without these declarations", file=sys.stderr)
        return
    print(f"the running station (PID {pid}) took {reply.get('records', 0)} of these declarations for items on its "
          f"belt or stored; {reply.get('revised', 0)} stored items decided again", file=sys.stderr)


def _report(reports: Iterable[LineReport], as_json: bool) -> int:
    """Print each line's report; a summary on standard error. 1 when any line was invalid."""
    counts = {"lines": 0, "invalid": 0, "with findings": 0, "stored": 0, "kept newer": 0}
    if not as_json:
        print(_COLUMNS.format(line="LINE", item="ITEM", valid="VALID", code="CODE", field="FIELD", message="MESSAGE"))
    for report in reports:
        counts["lines"] += 1
        counts["invalid"] += not report.valid
        counts["with findings"] += report.valid and bool(report.reasons)
        counts["stored"] += report.stored is True
        counts["kept newer"] += report.stored is False
        if as_json:
            print(json.dumps(report.to_dict()), flush=True)
        else:
            _print_rows(report)
    summary = ", ".join(f"{n} {what}" for what, n in counts.items() if n or what in ("lines", "invalid"))
    print(summary, file=sys.stderr)
    return 1 if counts["invalid"] else 0


def _print_rows(report: LineReport) -> None:
    valid = "yes" if report.valid else "NO"
    if report.stored is False:
        valid += "*"  # a same-or-later version was already stored
    first = {"line": report.line, "item": report.item_id or "-", "valid": valid}
    if not report.reasons:
        print(_COLUMNS.format(**first, code="-", field="", message="").rstrip())
    for i, reason in enumerate(report.reasons):
        cells = first if i == 0 else {"line": "", "item": "", "valid": ""}
        print(_COLUMNS.format(**cells, code=reason.code, field=reason.field or "", message=reason.detail))


def _show(args: argparse.Namespace) -> int:
    from station.ead.checks import check_record
    from station.intake import reason_dict
    from station.store import Store

    config = load(args)
    with Store(config.storage.data_dir / "station.db") as store:
        record = store.ead_for(args.item_id)
    if record is None:
        print(f"{args.item_id}: no EAD record stored", file=sys.stderr)
        return 1
    reasons = check_record(record)
    if args.json:
        print(json.dumps({"item_id": record.item_id, "record": record.model_dump(mode="json"),
                          "reasons": [reason_dict(r) for r in reasons]}))
        return 0
    for label, value in (
        ("item", record.item_id), ("version", record.version), ("category", record.category or "-"),
        ("declared", record.declared_at.isoformat() if record.declared_at else "-"),
        ("sender", _party(record.sender)), ("addressee", _party(record.addressee)),
        ("gross weight", "-" if record.total_gross_weight_kg is None else f"{record.total_gross_weight_kg:.3f} kg"),
        ("total value", "-" if record.total_value is None else f"{record.total_value:.2f} {record.currency}"),
    ):
        print(f"{label:<13} {value}")
    print("contents")
    for i, p in enumerate(record.contents):
        weight = "-" if p.net_weight_kg is None else f"{p.net_weight_kg:.3f} kg"
        value = "-" if p.value is None else f"{p.value:.2f} {p.currency or record.currency}"
        print(f"  [{i}] {p.quantity or '-'} x {p.description or '-'}  {weight}  {value}  HS {p.hs_code or '-'}  "
              f"origin {p.origin_country or '-'}")
    print("findings" if reasons else "findings      none")
    for reason in reasons:
        print(f"  {reason.code:<21}  {reason.field or '':<26}  {reason.detail}")
    return 0


def _party(party: Party) -> str:
    fields = [getattr(party, name) for name in ("name", "address", "postcode", "country", "contact")]
    return ", ".join(f for f in fields if f) or "-"
