"""`station diag`: the technician's tools at the box.

Every command prints aligned plain text and exits 0 when the check passed, 1 when it ran and
failed (no answer, a refused write, a failed self-test), 2 when it could not run as asked (bad
arguments, an unknown register, a bad configuration or profile); 141 when the pipe it printed
into was closed (`... | head`). Handlers import the drivers lazily so that `station --help`
stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

PASS, FAIL, USAGE = 0, 1, 2
SIGPIPE_EXIT = 141  # the shell's code for a command whose output pipe was closed
TABLE_CHOICES = ("coil", "discrete", "holding", "input")


class DiagError(Exception):
    """Base of this layer's errors; the message is printed for the technician as it is."""

    exit_code = FAIL


class DiagFailed(DiagError):
    """The check ran and failed: the device did not answer, refused, or reported a fault."""


class DiagUsage(DiagError):
    """The command cannot run as asked: unknown register, bad value, conflicting options."""

    exit_code = USAGE


def add_diag_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `diag` and its subcommands on the `station` command's subparsers."""
    from station.cli import _config_args  # here, not at the top: station.cli imports this module

    diag = sub.add_parser("diag", help="technician diagnostics: ports, PLC registers, serial traffic, self-tests")
    actions = diag.add_subparsers(required=True, metavar="ACTION")

    ports = actions.add_parser("ports", help="serial ports present, and whether the configured ones open")
    _config_args(ports)
    ports.set_defaults(handler=_handler("station.diag.serial_tools", "ports"))

    plc = actions.add_parser("plc", help="PLC registers").add_subparsers(required=True, metavar="ACTION")
    read = plc.add_parser("read", help="read a register by name (decoded) or an address (raw words)")
    _plc_args(read, _config_args)
    read.add_argument("register", metavar="NAME|ADDRESS")
    read.add_argument("--table", choices=TABLE_CHOICES, help="with an ADDRESS: which table (default holding)")
    read.add_argument("--count", type=_positive_int, default=1, help="with an ADDRESS: how many addresses")
    read.set_defaults(handler=_handler("station.diag.plc_tools", "read"))

    write = plc.add_parser("write", help="write a register (checked against the profile) and read it back")
    _plc_args(write, _config_args)
    write.add_argument("register", metavar="NAME")
    write.add_argument("value", metavar="VALUE", help="engineering units; 1/0, on/off or true/false for bits")
    write.set_defaults(handler=_handler("station.diag.plc_tools", "write"))

    watch = plc.add_parser("watch", help="live table of every profile register and the link health")
    _plc_args(watch, _config_args)
    watch.add_argument("--interval", type=_positive_float, default=0.5, help="seconds between polls")
    watch.add_argument("--count", type=_positive_int, help="stop after N polls (default: until Ctrl-C)")
    watch.set_defaults(handler=_handler("station.diag.plc_tools", "watch"))

    serial = actions.add_parser("serial", help="serial lines").add_subparsers(required=True, metavar="ACTION")
    sniff = serial.add_parser("sniff", help="print what a serial device sends, decoded, with error counts")
    _config_args(sniff)
    sniff.add_argument("port", metavar="PORT", help="serial device, or 'scanner' / 'barcode' for the configured one")
    sniff.add_argument("--seconds", type=_positive_float, default=10.0, help="how long to listen")
    sniff.add_argument("--frames", type=_positive_int, help="stop early after N good frames / codes")
    sniff.add_argument("--protocol", choices=("scanner", "barcode", "raw"),
                       help="how to decode (default: barcode for the barcode reader's port, else scanner)")
    sniff.add_argument("--baudrate", type=_positive_int, help="default: the configured device's, else 115200")
    sniff.set_defaults(handler=_handler("station.diag.serial_tools", "sniff"))

    scanner = actions.add_parser("scanner", help="X-ray scanner").add_subparsers(required=True, metavar="ACTION")
    selftest = scanner.add_parser("selftest", help="HELLO, STATUS, SELFTEST, TUBE: exit 0 only if all pass")
    _config_args(selftest)
    selftest.add_argument("--port", help="serial device (default: scanner.port from the configuration)")
    selftest.add_argument("--timeout", type=_positive_float, default=2.0, help="seconds per command")
    selftest.set_defaults(handler=_handler("station.diag.scanner_tools", "selftest"))


def _plc_args(p: argparse.ArgumentParser, config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    config_args(p)
    p.add_argument("--host", help="Modbus TCP host (overrides plc.link)")
    p.add_argument("--port", type=int, help="Modbus TCP port (overrides plc.link)")
    p.add_argument("--rtu", metavar="PORT", help="Modbus RTU on this serial device (overrides plc.link)")
    p.add_argument("--baudrate", type=_positive_int, help="RTU baud rate (overrides plc.link)")
    p.add_argument("--parity", choices=("N", "E", "O"), help="RTU parity (overrides plc.link)")


def _handler(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports its module on use and turns this layer's errors into exit codes."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        function = getattr(importlib.import_module(module), name)
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            # pymodbus logs every refused connect as a warning; the command reports the failure itself
            logging.getLogger("pymodbus").setLevel(logging.ERROR)
        try:
            return int(function(args))
        except DiagError as err:
            print(f"{'FAIL' if err.exit_code == FAIL else 'error'}: {err}", file=sys.stderr)
            return err.exit_code
        except BrokenPipeError:
            # `station diag plc watch | head`: the reader is gone, which is how such a pipe ends.
            # Point stdout at /dev/null so that the interpreter's final flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return SIGPIPE_EXIT

    return run


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from err
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from err
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value
