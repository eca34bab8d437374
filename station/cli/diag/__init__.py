"""`station diag`: the technician's tools at the box.

Every command prints aligned plain text and exits 0 when the check passed, 1 when it ran and
failed (no answer, a refused write, a failed self-test), 2 when it could not run as asked (bad
arguments, an unknown register, a bad configuration or profile); 141 when the pipe it printed
into was closed (`... | head`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from station.cli.common import config_args, positive_float, positive_int
from station.cli.diag.errors import FAIL, TABLE_CHOICES, DiagError


def add_diag_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `diag` and its subcommands on the `station` command's subparsers."""
    diag = sub.add_parser("diag", help="technician diagnostics: ports, PLC registers, serial traffic, self-tests")
    actions = diag.add_subparsers(required=True, metavar="ACTION")

    ports = actions.add_parser("ports", help="serial ports present, and whether the configured ones open")
    config_args(ports)
    ports.set_defaults(handler=_handler(_serial_ports))

    plc = actions.add_parser("plc", help="PLC registers").add_subparsers(required=True, metavar="ACTION")
    read = plc.add_parser("read", help="read a register by name (decoded) or an address (raw words)")
    _plc_args(read)
    read.add_argument("register", metavar="NAME|ADDRESS")
    read.add_argument("--table", choices=TABLE_CHOICES, help="with an ADDRESS: which table (default holding)")
    read.add_argument("--count", type=positive_int, default=1, help="with an ADDRESS: how many addresses")
    read.set_defaults(handler=_handler(_plc_read))

    write = plc.add_parser("write", help="write a register (checked against the profile) and read it back")
    _plc_args(write)
    write.add_argument("register", metavar="NAME")
    write.add_argument("value", metavar="VALUE", help="engineering units; 1/0, on/off or true/false for bits")
    write.set_defaults(handler=_handler(_plc_write))

    watch = plc.add_parser("watch", help="live table of every profile register and the link health")
    _plc_args(watch)
    watch.add_argument("--interval", type=positive_float, default=0.5, help="seconds between polls")
    watch.add_argument("--count", type=positive_int, help="stop after N polls (default: until Ctrl-C)")
    watch.set_defaults(handler=_handler(_plc_watch))

    serial = actions.add_parser("serial", help="serial lines").add_subparsers(required=True, metavar="ACTION")
    sniff = serial.add_parser("sniff", help="print what a serial device sends, decoded, with error counts")
    config_args(sniff)
    sniff.add_argument("port", metavar="PORT", help="serial device, or 'scanner' / 'barcode' for the configured one")
    sniff.add_argument("--seconds", type=positive_float, default=10.0, help="how long to listen")
    sniff.add_argument("--frames", type=positive_int, help="stop early after N good frames / codes")
    sniff.add_argument("--protocol", choices=("scanner", "barcode", "raw"),
                       help="how to decode (default: barcode for the barcode reader's port, else scanner)")
    sniff.add_argument("--baudrate", type=positive_int, help="default: the configured device's, else 115200")
    sniff.set_defaults(handler=_handler(_serial_sniff))

    scanner = actions.add_parser("scanner", help="X-ray scanner").add_subparsers(required=True, metavar="ACTION")
    selftest = scanner.add_parser("selftest", help="HELLO, STATUS, SELFTEST, TUBE: exit 0 only if all pass")
    config_args(selftest)
    selftest.add_argument("--port", help="serial device (default: scanner.port from the configuration)")
    selftest.add_argument("--timeout", type=positive_float, default=2.0, help="seconds per command")
    selftest.set_defaults(handler=_handler(_scanner_selftest))


def _plc_args(p: argparse.ArgumentParser) -> None:
    config_args(p)
    p.add_argument("--host", help="Modbus TCP host (overrides plc.link)")
    p.add_argument("--port", type=int, help="Modbus TCP port (overrides plc.link)")
    p.add_argument("--rtu", metavar="PORT", help="Modbus RTU on this serial device (overrides plc.link)")
    p.add_argument("--baudrate", type=positive_int, help="RTU baud rate (overrides plc.link)")
    p.add_argument("--parity", choices=("N", "E", "O"), help="RTU parity (overrides plc.link)")


# The tools import the drivers, so each is imported when its command runs: `station --help` stays fast.
def _serial_ports(args: argparse.Namespace) -> int:
    from station.cli.diag import serial_tools

    return serial_tools.ports(args)


def _serial_sniff(args: argparse.Namespace) -> int:
    from station.cli.diag import serial_tools

    return serial_tools.sniff(args)


def _plc_read(args: argparse.Namespace) -> int:
    from station.cli.diag import plc_tools

    return plc_tools.read(args)


def _plc_write(args: argparse.Namespace) -> int:
    from station.cli.diag import plc_tools

    return plc_tools.write(args)


def _plc_watch(args: argparse.Namespace) -> int:
    from station.cli.diag import plc_tools

    return plc_tools.watch(args)


def _scanner_selftest(args: argparse.Namespace) -> int:
    from station.cli.diag import scanner_tools

    return scanner_tools.selftest(args)


def _handler(function: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`function` with this layer's errors turned into exit codes."""

    def run(args: argparse.Namespace) -> int:
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            # pymodbus logs every refused connect as a warning; the command reports the failure itself
            logging.getLogger("pymodbus").setLevel(logging.ERROR)
        try:
            return int(function(args))
        except DiagError as err:
            print(f"{'FAIL' if err.exit_code == FAIL else 'error'}: {err}", file=sys.stderr)
            return err.exit_code

    return run
