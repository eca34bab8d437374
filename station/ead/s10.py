"""UPU S10 item identifiers: two letters, eight serial digits, a check digit, an ISO 3166 country code.

The check digit uses the weights 8 6 4 2 3 5 9 7 on the serial digits: 11 - (sum mod 11),
where 10 becomes 0 and 11 becomes 5 (UPU S10 standard).
"""

from __future__ import annotations

import re

_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)
_FORMAT = re.compile(r"^([A-Z]{2})(\d{8})(\d)([A-Z]{2})$")


def check_digit(serial: str) -> int:
    """The S10 check digit of an eight-digit serial number."""
    if len(serial) != 8 or not serial.isdigit():
        raise ValueError(f"S10 serial must be 8 digits, got {serial!r}")
    remainder = 11 - sum(int(d) * w for d, w in zip(serial, _WEIGHTS)) % 11
    return {10: 0, 11: 5}.get(remainder, remainder)


def s10_problem(code: str) -> str | None:
    """None when `code` is a well-formed S10 identifier, else a sentence saying what is wrong."""
    match = _FORMAT.match(code)
    if match is None:
        return f"{code!r} is not two letters, eight digits, a check digit and a two-letter country code"
    _, serial, check, _ = match.groups()
    expected = check_digit(serial)
    if int(check) != expected:
        return f"{code!r} has check digit {check}, expected {expected}"
    return None


def make_s10(service: str, serial: int, country: str) -> str:
    """Build a valid S10 identifier (the simulator and tests use this)."""
    digits = f"{serial:08d}"
    return f"{service}{digits}{check_digit(digits)}{country}"
