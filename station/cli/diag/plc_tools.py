"""`station diag plc read|write|watch`: PLC registers as a technician sees them.

Named reads and writes go through the station's own driver (drivers.plc.Plc), so the limits, the
access rules and the read-back are exactly what the lane enforces; the heartbeat stays off, so a
technician's read never keeps a belt alive. Reads by address bypass the profile and talk pymodbus
directly, to look at words the profile does not name.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from drivers.links import Link, RtuLink, TcpLink
from drivers.plc import Plc, PlcError, PlcWriteError
from drivers.plc_io import PlcIo
from drivers.profile import Profile, ProfileError, Register, Value, load_profile
from station.cli.common import load
from station.cli.diag.errors import FAIL, PASS, DiagFailed, DiagUsage
from station.cli.diag.render import REGISTER_HEADER, health_text, register_row, table, value_text
from station.config import Config
from station.control import os_user, send, socket_path
from station.lock import holder
from station.store import Store

EXCEPTION_CODES = {
    1: "illegal function: the PLC does not serve this table",
    2: "illegal data address: the PLC does not map these addresses",
    3: "illegal data value", 4: "device failure", 6: "device busy",
    10: "gateway path unavailable", 11: "gateway target did not respond",
}
_TRUE, _FALSE = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


def read(args: argparse.Namespace) -> int:
    config, profile, link = _setup(args)
    if args.register.isdigit():
        return asyncio.run(_read_address(config, profile, link, args.table or "holding", int(args.register),
                                         args.count))
    if args.table is not None or args.count != 1:
        raise DiagUsage("--table and --count go with a numeric ADDRESS; a NAME has its own table and size")
    reg = _register(profile, args.register)
    return asyncio.run(_read_name(config, profile, link, reg))


def write(args: argparse.Namespace) -> int:
    """A write goes through the station running on this data folder when there is one (which refuses
    outputs that move goods unless the lane is in maintenance), else straight to the PLC; audited either way."""
    config, profile, link = _setup(args)
    reg = _register(profile, args.register)
    value = parse_value(reg, args.value)
    data_dir = config.storage.data_dir
    if (pid := holder(data_dir)) is not None:
        return asyncio.run(_write_through_station(data_dir, pid, reg, value))
    with Store(data_dir / "station.db") as store:
        store.add_audit(os_user(), f"diag plc write {reg.name}={value_text(value)} (no station running)")
    return asyncio.run(_write(config, profile, link, reg, value))


async def _write_through_station(data_dir: Path, pid: int, reg: Register, value: Value) -> int:
    try:
        reply = await send(socket_path(data_dir), "plc-write", 10.0, name=reg.name, value=value)
    except (OSError, TimeoutError) as err:
        raise DiagFailed(f"the station (PID {pid}) holds this lane but does not answer on its control socket: "
                         f"{err}; nothing written") from err
    if not reply.get("ok"):
        raise DiagFailed(f"refused by the running station (PID {pid}): {reply.get('error')}")
    back = reply.get("read_back")
    print(f"wrote {reg.name} = {value_text(value)} {reg.unit}".rstrip() + f" through the running station (PID {pid})"
          + ("" if back is None else f"; read back: {value_text(back)}"))  # type: ignore[arg-type]
    return PASS


def watch(args: argparse.Namespace) -> int:
    config, profile, link = _setup(args)
    return asyncio.run(_watch(config, profile, link, args.interval, args.count))


# ---- arguments -----------------------------------------------------------------------------------


def _setup(args: argparse.Namespace) -> tuple[Config, Profile, Link]:
    config = load(args)
    try:
        profile = load_profile(config.plc.profile)
    except ProfileError as err:
        raise DiagUsage(f"PLC profile: {err}") from err
    return config, profile, plc_link(config, args)


def plc_link(config: Config, args: argparse.Namespace) -> Link:
    """The configured link, with the command line's --host/--port or --rtu (--baudrate, --parity) over it."""
    configured = config.plc.link.link()
    host, port, rtu = args.host, args.port, args.rtu
    serial_options = {k: v for k, v in (("baudrate", args.baudrate), ("parity", args.parity)) if v is not None}
    if rtu is not None:
        if host is not None or port is not None:
            raise DiagUsage("--rtu cannot be combined with --host/--port")
        base = configured if isinstance(configured, RtuLink) else RtuLink(rtu)
        return replace(base, port=rtu, **serial_options)
    if isinstance(configured, RtuLink) and serial_options:
        if host is not None or port is not None:
            raise DiagUsage("--host/--port make a TCP link: --baudrate/--parity do not apply")
        return replace(configured, **serial_options)
    if serial_options:
        raise DiagUsage("--baudrate/--parity apply to an RTU link (configured, or --rtu PORT)")
    if host is None and port is None:
        return configured
    if port is not None and not 1 <= port <= 65535:
        raise DiagUsage(f"--port {port} is not a TCP port (1..65535)")
    base_tcp = configured if isinstance(configured, TcpLink) else TcpLink("127.0.0.1")
    return TcpLink(host if host is not None else base_tcp.host, port if port is not None else base_tcp.port)


def _register(profile: Profile, name: str) -> Register:
    if not profile.has(name):
        known = ", ".join(r.name for r in profile.registers)
        raise DiagUsage(f"profile {profile.name!r} has no register {name!r}; it has: {known}")
    return profile.by_name(name)


def parse_value(reg: Register, text: str) -> Value:
    """The command line's VALUE in the register's kind; DiagUsage if it cannot be one."""
    if reg.type == "bool":
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise DiagUsage(f"{reg.name} is a bit: give 1/0, on/off or true/false, not {text!r}")
    for base in (10, 0):  # decimal first (so "010" is ten), then 0x.. / 0b.. / 0o..
        try:
            return int(text, base)
        except ValueError:
            pass
    try:
        number = float(text)
    except ValueError as err:
        raise DiagUsage(f"{reg.name} takes a number, not {text!r}") from err
    if reg.type != "f32" and reg.scale == 1.0:
        raise DiagUsage(f"{reg.name} is {reg.type} with scale 1: give a whole number, not {text!r}")
    return number


# ---- the connection ------------------------------------------------------------------------------


def _first_poll_budget(config: Config) -> float:
    """How long a PLC may take to connect and answer one full poll before we call it absent."""
    return max(2.0, 4 * config.plc.timeout_s)


@asynccontextmanager
async def _open_plc(config: Config, profile: Profile, link: Link,
                    poll_interval: float | None = None) -> AsyncIterator[Plc]:
    """A Plc that has answered one full poll, or DiagFailed naming the link and why."""
    async with Plc(profile, link, poll_interval=poll_interval or config.plc.poll_interval_s,
                   timeout=config.plc.timeout_s, heartbeat_interval=None) as plc:
        budget = _first_poll_budget(config)
        try:
            async with asyncio.timeout(budget):
                await plc.next_snapshot(-1)
        except TimeoutError as err:
            raise DiagFailed(f"PLC {link} did not answer within {budget:g} s: "
                             f"{plc.health.detail or plc.health.state.value}") from err
        yield plc


# ---- commands ------------------------------------------------------------------------------------


async def _read_name(config: Config, profile: Profile, link: Link, reg: Register) -> int:
    async with _open_plc(config, profile, link) as plc:
        try:
            value = await plc.read(reg.name)
        except PlcError as err:
            raise DiagFailed(f"read {reg.name}: {explain(str(err))}") from err
    print("\n".join(table(REGISTER_HEADER, [register_row(reg, value)])))
    return PASS


async def _read_address(config: Config, profile: Profile, link: Link, table_name: str, address: int,
                        count: int) -> int:
    if address + count - 1 > 65535:
        raise DiagUsage(f"{table_name} {address}+{count} runs past address 65535")
    io = PlcIo(link, profile.unit_id, timeout=config.plc.timeout_s, read_retries=0, where=f"PLC {link}")
    try:
        if not await io.connect():
            raise DiagFailed(f"cannot connect to PLC {link}")
        words = await io.read(table_name, address, count, "read")
    except PlcError as err:
        raise DiagFailed(explain(str(err))) from err
    finally:
        io.close()
    rows = []
    for offset, word in enumerate(words):
        at = address + offset
        raw = str(int(word))
        hexa = "" if isinstance(word, bool) else f"0x{word:04X}"
        rows.append([table_name, str(at), raw, hexa, _covering(profile, table_name, at)])
    print("\n".join(table(("table", "address", "raw", "hex", "register"), rows)))
    return PASS


def explain(message: str) -> str:
    """Add the meaning of a Modbus exception code to a driver message that quotes one."""
    found = re.search(r"exception reply code (\d+)", message)
    meaning = EXCEPTION_CODES.get(int(found.group(1))) if found else None
    return f"{message} ({meaning})" if meaning else message


def _covering(profile: Profile, table_name: str, address: int) -> str:
    """Which profile register holds this address, e.g. 'encoder (word 2 of 2)'."""
    for reg in profile.registers:
        if reg.table == table_name and reg.address <= address < reg.address + reg.words:
            part = f" (word {address - reg.address + 1} of {reg.words})" if reg.words > 1 else ""
            return reg.name + part
    return "-"


async def _write(config: Config, profile: Profile, link: Link, reg: Register, value: Value) -> int:
    async with _open_plc(config, profile, link) as plc:
        try:
            await plc.write(reg.name, value)
        except PlcWriteError as err:
            raise DiagFailed(f"write refused: {explain(str(err))}") from err
        except PlcError as err:
            raise DiagFailed(f"write {reg.name}: {err}") from err
        if reg.pulse:
            print(f"wrote {reg.name} = {value_text(value)} (a pulse: the PLC resets it itself, not read back)")
            return PASS
        try:
            back = await plc.read(reg.name)
        except PlcError as err:
            raise DiagFailed(f"wrote {reg.name} but could not read it back: {err}") from err
    print(f"wrote {reg.name} = {value_text(value)} {reg.unit}".rstrip() + "; read back:")
    print("\n".join(table(REGISTER_HEADER, [register_row(reg, back)])))
    return PASS


async def _watch(config: Config, profile: Profile, link: Link, interval: float, count: int | None) -> int:
    """Print the register table once per poll; on a terminal, redraw it in place.

    A poll that brings no fresh snapshot within the budget still prints a table (values '?') with
    the link's health, so a dead link is visible rather than a frozen screen.
    """
    tty = sys.stdout.isatty()
    shown_lines = 0
    polls, seq, fresh = 0, 0, False
    async with Plc(profile, link, poll_interval=interval, timeout=config.plc.timeout_s,
                   heartbeat_interval=None) as plc:
        budget = _first_poll_budget(config)
        while count is None or polls < count:
            polls += 1
            values: Mapping[str, Value] = {}
            try:
                async with asyncio.timeout(budget):
                    snapshot = await plc.next_snapshot(seq)
                seq, values, fresh = snapshot.seq, snapshot.values, True
            except TimeoutError:
                fresh = False
            budget = interval + 2 * config.plc.timeout_s
            head = f"poll {polls}  {time.strftime('%H:%M:%S')}  " + health_text(plc.health, f"PLC {link}")
            rows = [register_row(reg, values.get(reg.name)) for reg in profile.registers]
            lines = [head, *table(REGISTER_HEADER, rows)]
            if tty and shown_lines:
                sys.stdout.write(f"\x1b[{shown_lines}F\x1b[J")  # up to the old table, clear below
            sys.stdout.write("\n".join(lines) + ("\n" if tty else "\n\n"))
            sys.stdout.flush()
            shown_lines = len(lines)
    return PASS if fresh else FAIL
