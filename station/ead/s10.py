"""UPU S10 item identifiers: two letters, eight serial digits, a check digit, an ISO 3166 country code.

The check digit uses the weights 8 6 4 2 3 5 9 7 on the serial digits: 11 - (sum mod 11),
where 10 becomes 0 and 11 becomes 5 (UPU S10 standard). The first letter of the service indicator
must not be one S10 reserves (station/ead/data/s10_service_indicators.csv cites the ranges), and the
last two letters must be an ISO 3166-1 alpha-2 country code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from station.ead.codes import countries, service_indicators

_WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)
_FORMAT = re.compile(r"([A-Z]{2})([0-9]{8})([0-9])([A-Z]{2})")  # ASCII only, used with fullmatch

S10Fault = Literal["format", "check_digit", "service_indicator", "country"]


@dataclass(frozen=True)
class S10Problem:
    """Why a code is not an S10 identifier: which test it failed, and a sentence for people."""

    fault: S10Fault
    message: str


def check_digit(serial: str) -> int:
    """The S10 check digit of an eight-digit serial number."""
    if len(serial) != 8 or not serial.isdigit():
        raise ValueError(f"S10 serial must be 8 digits, got {serial!r}")
    remainder = 11 - sum(int(d) * w for d, w in zip(serial, _WEIGHTS, strict=True)) % 11
    return {10: 0, 11: 5}.get(remainder, remainder)


def s10_check(code: str) -> S10Problem | None:
    """None when `code` is a valid S10 identifier, else the first test it fails (format first)."""
    match = _FORMAT.fullmatch(code)
    if match is None:
        return S10Problem("format", f"{code!r} is not two letters, eight digits, a check digit and a two-letter "
                                    "country code")
    service, serial, check, country = match.groups()
    expected = check_digit(serial)
    if int(check) != expected:
        return S10Problem("check_digit", f"{code!r} has check digit {check}, expected {expected}")
    if service_indicators().get(service[0]) == "reserved":
        return S10Problem("service_indicator", f"{code!r} has service indicator {service}: UPU S10 reserves "
                                               f"{service[0]}A-{service[0]}Z, no item may carry it")
    if country not in countries():
        return S10Problem("country", f"{code!r} ends in {country}, which is not an ISO 3166-1 country code")
    return None


def s10_problem(code: str) -> str | None:
    """None when `code` is a valid S10 identifier, else a sentence saying what is wrong."""
    problem = s10_check(code)
    return None if problem is None else problem.message


def make_s10(service: str, serial: int, country: str) -> str:
    """Build an S10 identifier with the right check digit (the simulator and tests use this)."""
    digits = f"{serial:08d}"
    return f"{service}{digits}{check_digit(digits)}{country}"
