"""PLC register-map profiles: load and validate a TOML map, and the pure register codec.

A profile names every register the station and the PLC agree on. Loading either yields a fully
validated `Profile` or raises `ProfileError` naming the file, the register and the problem, so a
bad map is caught at start-up rather than as a strange value on the belt.
"""

from __future__ import annotations

import itertools
import math
import struct
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROFILE_DIR = Path(__file__).parent / "profiles"

TABLES = ("coil", "discrete", "holding", "input")
BIT_TABLES = frozenset({"coil", "discrete"})
WRITABLE_TABLES = frozenset({"coil", "holding"})
MAX_READ = {"coil": 2000, "discrete": 2000, "holding": 125, "input": 125}  # per request, Modbus spec
TYPE_WORDS = {"bool": 1, "u16": 1, "i16": 1, "u32": 2, "f32": 2}
WORD_ORDERS = ("big", "little")
ACCESSES = ("r", "rw")

_TOP_KEYS = {"name", "version", "unit_id", "description", "register"}
_REQUIRED = ("name", "table", "address", "type")
_OPTIONAL = {"word_order", "scale", "unit", "access", "min", "max", "description", "words", "pulse"}

Value = bool | int | float
_Fail = Callable[[str, str], "ProfileError"]  # (where, problem) -> error naming the file


class ProfileError(ValueError):
    """A profile file is unreadable or invalid; the message names file, register and problem."""


class EncodeError(ValueError):
    """A value cannot be represented in its register (type range, wrong kind)."""


@dataclass(frozen=True)
class Register:
    """One named PLC value. `words` is its width in 16-bit registers (1 for bits)."""

    name: str
    table: str
    address: int
    type: str
    word_order: str = "big"
    scale: float = 1.0
    unit: str = ""
    access: str = "r"
    min: float | None = None
    max: float | None = None
    description: str = ""
    pulse: bool = False  # the PLC resets it itself: a write is not read back

    @property
    def words(self) -> int:
        return TYPE_WORDS[self.type]

    @property
    def writable(self) -> bool:
        return self.access == "rw"


@dataclass(frozen=True)
class Group:
    """One read request: `count` consecutive addresses of `table` from `start`."""

    table: str
    start: int
    count: int


@dataclass(frozen=True)
class Profile:
    """A validated register map. Registers are in file order; names are unique."""

    name: str
    version: int
    unit_id: int
    registers: tuple[Register, ...]
    path: Path | None = None
    _index: dict[str, Register] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {r.name: r for r in self.registers})

    def by_name(self, name: str) -> Register:
        """The register called `name`; KeyError naming the profile if there is none."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"profile {self.name!r} has no register {name!r}") from None

    def has(self, name: str) -> bool:
        return name in self._index

    def table_size(self, table: str) -> int:
        """Addresses 0..size-1 cover every register of `table` (0 if it has none)."""
        ends = [r.address + r.words for r in self.registers if r.table == table]
        return max(ends, default=0)

    def groups(self) -> list[Group]:
        """One request per contiguous run of readable registers, per table, in table order.

        Every register is readable (access r or rw); a gap in addresses starts a new group so
        that no request touches an address the PLC may not map, and so does a run longer than
        one Modbus request may read (`MAX_READ`), never splitting a 32-bit value.
        """
        out: list[Group] = []
        for table in TABLES:
            regs = sorted((r for r in self.registers if r.table == table), key=lambda r: r.address)
            start = end = -1
            for reg in regs:
                if reg.address != end or reg.address + reg.words - start > MAX_READ[table]:
                    if start >= 0:
                        out.append(Group(table, start, end - start))
                    start = reg.address
                end = reg.address + reg.words
            if start >= 0:
                out.append(Group(table, start, end - start))
        return out


def load_profile(path_or_name: str | Path) -> Profile:
    """Load and validate a profile; a bare name ("default") means drivers/profiles/<name>.toml."""
    path = Path(path_or_name)
    if isinstance(path_or_name, str) and path.suffix == "" and len(path.parts) == 1:
        path = PROFILE_DIR / f"{path_or_name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ProfileError(f"{path}: cannot read profile: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{path}: not valid TOML: {err}") from err
    return _build(path, data)


def _build(path: Path, data: dict[str, object]) -> Profile:
    def fail(where: str, problem: str) -> ProfileError:
        return ProfileError(f"{path}: {where}: {problem}")

    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise fail("top level", f"unknown keys {sorted(unknown)}")
    name, version, unit_id = data.get("name"), data.get("version", 1), data.get("unit_id", 1)
    if not isinstance(name, str) or not name:
        raise fail("top level", "'name' must be a non-empty string")
    if not isinstance(version, int) or not isinstance(unit_id, int) or not 0 <= unit_id <= 255:
        raise fail("top level", "'version' must be an integer and 'unit_id' an integer 0..255")
    raw_regs = data.get("register", [])
    if not isinstance(raw_regs, list) or not raw_regs:
        raise fail("top level", "needs at least one [[register]] table")
    registers: list[Register] = []
    for i, raw in enumerate(raw_regs):
        registers.append(_register(raw, f"register #{i + 1}", fail))
    _check_layout(registers, fail)
    return Profile(name=name, version=version, unit_id=unit_id, registers=tuple(registers), path=path)


def _register(raw: object, where: str, fail: _Fail) -> Register:
    if not isinstance(raw, dict):
        raise fail(where, "must be a table")
    if isinstance(raw.get("name"), str):
        where = f"register {raw['name']!r}"
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise fail(where, f"missing keys {missing}")
    unknown = set(raw) - set(_REQUIRED) - _OPTIONAL
    if unknown:
        raise fail(where, f"unknown keys {sorted(unknown)}")
    table, typ = raw["table"], raw["type"]
    access, order = raw.get("access", "r"), raw.get("word_order", "big")
    if table not in TABLES:
        raise fail(where, f"table {table!r} is not one of {list(TABLES)}")
    if typ not in TYPE_WORDS:
        raise fail(where, f"type {typ!r} is not one of {list(TYPE_WORDS)}")
    if access not in ACCESSES:
        raise fail(where, f"access {access!r} is not one of {list(ACCESSES)}")
    if order not in WORD_ORDERS:
        raise fail(where, f"word_order {order!r} is not one of {list(WORD_ORDERS)}")
    if (typ == "bool") != (table in BIT_TABLES):
        raise fail(where, f"type {typ!r} is not allowed in table {table!r} (bool only on coil/discrete)")
    if access == "rw" and table not in WRITABLE_TABLES:
        raise fail(where, f"access 'rw' is impossible on read-only table {table!r}")
    if "words" in raw and raw["words"] != TYPE_WORDS[typ]:
        raise fail(where, f"type {typ!r} needs {TYPE_WORDS[typ]} words, not {raw['words']!r}")
    address = raw["address"]
    if not isinstance(address, int) or isinstance(address, bool) or not 0 <= address <= 65535:
        raise fail(where, f"address {address!r} is not an integer 0..65535")
    if address + TYPE_WORDS[typ] - 1 > 65535:
        raise fail(where, "extends past address 65535")
    scale = raw.get("scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale == 0:
        raise fail(where, f"scale {scale!r} must be a finite non-zero number")
    lo, hi = raw.get("min"), raw.get("max")
    for key, bound in (("min", lo), ("max", hi)):
        if bound is not None and (not isinstance(bound, (int, float)) or isinstance(bound, bool)):
            raise fail(where, f"{key} {bound!r} is not a number")
    if lo is not None and hi is not None and lo > hi:
        raise fail(where, f"min {lo} > max {hi}")
    for key in ("name", "unit", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise fail(where, f"{key} must be a string")
    if not raw["name"]:
        raise fail(where, "name must not be empty")
    return Register(
        name=raw["name"], table=table, address=address, type=typ, word_order=order,
        scale=float(scale), unit=raw.get("unit", ""), access=access,
        min=None if lo is None else float(lo), max=None if hi is None else float(hi),
        description=raw.get("description", ""), pulse=bool(raw.get("pulse", False)),
    )


def _check_layout(registers: list[Register], fail: _Fail) -> None:
    seen: dict[str, Register] = {}
    for reg in registers:
        if reg.name in seen:
            raise fail(f"register {reg.name!r}", "duplicate name")
        seen[reg.name] = reg
    for table in TABLES:
        regs = sorted((r for r in registers if r.table == table), key=lambda r: r.address)
        for prev, cur in itertools.pairwise(regs):
            if cur.address < prev.address + prev.words:
                raise fail(
                    f"register {cur.name!r}",
                    f"{table} address {cur.address} overlaps register {prev.name!r}"
                    f" ({prev.address}..{prev.address + prev.words - 1})",
                )


# ---- pure codec ------------------------------------------------------------------------------

U32_WRAP = 2**32


def signed32(value: int) -> int:
    """The difference of two u32 counters (an encoder, a position register) as the signed distance it
    stands for: how station and PLC compare positions across the counter's wrap."""
    value %= U32_WRAP
    return value - U32_WRAP if value >= U32_WRAP // 2 else value


_RANGES = {"u16": (0, 0xFFFF), "i16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFF_FFFF)}


def encode(register: Register, value: Value) -> list[int] | bool:
    """Engineering value -> raw: a bool for bit registers, else `register.words` 16-bit words.

    Integer types round value/scale to the nearest integer; out-of-range values raise EncodeError
    (limits from the profile are the caller's business: this only guards representability).
    """
    if register.type == "bool":
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise EncodeError(f"register {register.name!r}: {value!r} is not a bool")
        return bool(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EncodeError(f"register {register.name!r}: {value!r} is not a number")
    raw = value / register.scale if register.scale != 1.0 else value
    if register.type == "f32":
        try:
            packed = struct.pack(">f", raw)
        except OverflowError as err:
            raise EncodeError(f"register {register.name!r}: {value!r} overflows f32") from err
        words = list(struct.unpack(">HH", packed))
    else:
        if not math.isfinite(raw):
            raise EncodeError(f"register {register.name!r}: {value!r} is not finite")
        n = round(raw)
        lo, hi = _RANGES[register.type]
        if not lo <= n <= hi:
            raise EncodeError(f"register {register.name!r}: {value!r} is outside {register.type} {lo}..{hi}")
        if register.type == "u32":
            words = [n >> 16, n & 0xFFFF]
        else:
            words = [n & 0xFFFF]
    if register.word_order == "little":
        words.reverse()
    return words


def decode(register: Register, words: list[int] | list[bool] | bool) -> Value:
    """Raw -> engineering value: bool for bits; int for integer types with scale 1; else float."""
    if register.type == "bool":
        bit = words[0] if isinstance(words, list) else words
        return bool(bit)
    if not isinstance(words, list) or len(words) != register.words:
        raise EncodeError(f"register {register.name!r}: needs {register.words} words, got {words!r}")
    ws = [int(w) & 0xFFFF for w in words]
    if register.word_order == "little":
        ws.reverse()
    raw: int | float
    if register.type == "f32":
        raw = struct.unpack(">f", struct.pack(">HH", *ws))[0]
        return raw * register.scale
    if register.type == "u32":
        raw = (ws[0] << 16) | ws[1]
    elif register.type == "i16":
        raw = ws[0] - 0x10000 if ws[0] & 0x8000 else ws[0]
    else:
        raw = ws[0]
    return raw if register.scale == 1.0 else raw * register.scale
