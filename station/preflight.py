"""What `station run` checks before it opens anything, and `station config check` runs without starting.

A problem names the configuration key it comes from, so the file's line can be shown. Problems that
refuse the start: a PLC profile, rules or overrides file that cannot be read or is wrong, a serial port
that cannot exist (not an absolute path, a folder, a path outside /dev that is not there, two devices on
one port), a data folder that cannot be written, the central link's TLS files that cannot be used.
A model that is missing or fails its hash does not stop `station run` (the lane starts MANUAL_ONLY:
every item to INSPECT, with an alarm), but `station config check` refuses it: a configuration that
leaves the lane without a model is not right.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from drivers.profile import ProfileError, load_profile
from station.config import Config, ConfigError, PlcRtu, line_of


@dataclass(frozen=True)
class Problem:
    key: str  # the configuration key, dotted: "plc.profile"
    what: str
    refuses_start: bool = True

    def text(self, source: str | None = None, file_text: str = "") -> str:
        line = line_of(file_text, tuple(self.key.split("."))) if file_text else None
        where = f"{source}:{line}: " if source and line else f"{source}: " if source else ""
        return f"{where}{self.key}: {self.what}"


def check(config: Config, *, simulate: bool = False) -> list[Problem]:
    """Everything that would refuse the start of `config` (on the simulated lane: its own ports)."""
    problems: list[Problem] = []
    try:
        load_profile(config.plc.profile)
    except ProfileError as err:
        problems.append(Problem("plc.profile", str(err)))
    from station.rules import load_ruleset  # the rules engine, only once the cheap checks have run

    try:
        load_ruleset(config)
    except ConfigError as err:
        key = "rules.overrides" if config.rules.overrides and str(config.rules.overrides) in str(err) else "rules.path"
        problems.append(Problem(key, str(err)))
    if not simulate:
        problems += _ports(config)
    problems += _data_dir(config.storage.data_dir)
    problems += _mqtt_tls(config)
    return problems


def _mqtt_tls(config: Config) -> list[Problem]:
    """The central link's CA, certificate and key, read as each connect reads them."""
    from station.mqtt_tls import tls_context

    try:
        tls_context(config.mqtt)
    except ConfigError as err:
        key = next((k for k in ("ca_file", "cert_file", "key_file") if k in str(err)), "tls")
        return [Problem(f"mqtt.{key}", str(err).removeprefix("[mqtt] "))]
    return []


def check_model(config: Config) -> list[Problem]:
    """The configured model loaded as the start loads it (verified, warmed up): a problem is MANUAL_ONLY."""
    from station.kernel.detector import DEFAULT_MODEL, Detector, ModelError

    try:
        Detector.load(config.model.path or DEFAULT_MODEL, threads=1)
    except ModelError as err:
        return [Problem("model.path", f"{err}; `station run` would start MANUAL_ONLY (every item to INSPECT)",
                        refuses_start=False)]
    return []


def _ports(config: Config) -> list[Problem]:
    ports = {"scanner.port": config.scanner.port, "barcode.port": config.barcode.port}
    if isinstance(config.plc.link, PlcRtu):
        ports["plc.link.port"] = config.plc.link.port
    problems = [Problem(key, why) for key, port in ports.items() if (why := _port_problem(port))]
    seen: dict[str, str] = {}
    for key, port in ports.items():
        if port in seen:
            problems.append(Problem(key, f"{port} is also {seen[port]}: one serial port serves one device"))
        seen.setdefault(port, key)
    return problems


def _port_problem(port: str) -> str:
    """Why `port` cannot be a serial device ('' if it can: present, or under /dev where one may be plugged)."""
    path = Path(port)
    if not port or not path.is_absolute():
        return f"{port!r} is not an absolute device path (like /dev/ttyUSB0 or /dev/serial/by-id/...)"
    if path.is_dir():
        return f"{port} is a folder, not a device"
    if not path.exists() and not port.startswith("/dev/"):
        return f"{port} does not exist, and outside /dev no device will appear there"
    if path.exists() and path.is_file():
        return f"{port} is a plain file, not a device"
    return ""


def _data_dir(data_dir: Path) -> list[Problem]:
    """The data folder must be creatable and writable (its nearest existing parent, if it is not there yet)."""
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [Problem("storage.data_dir", f"{existing} is not a folder")]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Problem("storage.data_dir", f"{existing} is not writable by this user")]
    return _store_version(data_dir / "station.db")


def _store_version(path: Path) -> list[Problem]:
    """A store written by a newer station refuses the start (read without opening it for writing)."""
    from station.store import SCHEMA_VERSION

    if not path.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            found = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as err:
        return [Problem("storage.data_dir", f"{path}: not a readable store: {err}")]
    if found > SCHEMA_VERSION:
        return [Problem("storage.data_dir", f"{path} has store schema version {found}, newer than this station's "
                        f"{SCHEMA_VERSION}: a newer station wrote it; install that version again, or restore a "
                        f"backup made by this one (station restore)")]
    return []
