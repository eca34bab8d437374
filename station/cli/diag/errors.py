"""What every diag tool shares: its outcomes and its errors (exit codes as every `station` command's)."""

from __future__ import annotations

from station.cli.common import FAILED as FAIL
from station.cli.common import OK as PASS
from station.cli.common import USAGE

TABLE_CHOICES = ("coil", "discrete", "holding", "input")


class DiagError(Exception):
    """Base of this layer's errors; the message is printed for the technician as it is."""

    exit_code = FAIL


class DiagFailed(DiagError):
    """The check ran and failed: the device did not answer, refused, or reported a fault."""


class DiagUsage(DiagError):
    """The command cannot run as asked: unknown register, bad value, conflicting options."""

    exit_code = USAGE


__all__ = ["FAIL", "PASS", "TABLE_CHOICES", "USAGE", "DiagError", "DiagFailed", "DiagUsage"]
