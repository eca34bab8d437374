"""Plain-text output for the technician's commands: aligned tables and value formatting.

Pure functions (strings in, strings out), so that what a technician reads at the box is what the
tests read, and a pipe (`station diag ... | tee log`) gets exactly the same text as a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from drivers.health import DeviceHealth
from drivers.profile import Register, Value


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a left-aligned table, columns two spaces apart; trailing blanks stripped."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip()
            for line in (header, *rows)]


def value_text(value: Value | None) -> str:
    """A register value as a technician types it back into `plc write`: 1/0, integers, 6 digits."""
    if value is None:
        return "?"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def register_row(reg: Register, value: Value | None) -> list[str]:
    """The row every register table uses: name, table, address, value, unit."""
    address = str(reg.address) if reg.words == 1 else f"{reg.address}-{reg.address + reg.words - 1}"
    return [reg.name, reg.table, address, value_text(value), reg.unit]


REGISTER_HEADER = ("name", "table", "address", "value", "unit")


def health_text(health: DeviceHealth, where: str) -> str:
    """One line: where, state, age of the last good exchange, error counters, detail."""
    parts = [where, health.state.value.upper()]
    if health.last_success is not None:
        parts.append(f"last ok {max(0.0, time.time() - health.last_success):.1f} s ago")
    if health.errors:
        parts.append("errors " + " ".join(f"{k}={v}" for k, v in sorted(health.errors.items())))
    if health.detail:
        parts.append(health.detail)
    return "  ".join(parts)


def hex_bytes(data: bytes, limit: int = 64) -> str:
    """Hex with an ASCII column: `24 48 ...  |$H..|`; longer input is cut and says so."""
    shown = data[:limit]
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in shown)
    more = f" (+{len(data) - limit} bytes)" if len(data) > limit else ""
    return f"{shown.hex(' ')}  |{text}|{more}"
