"""Register-map profiles: the default map, validation messages, and the codec round trip."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.profile import EncodeError, Group, ProfileError, Register, decode, encode, load_profile

GOOD_REG = 'name = "speed"\ntable = "holding"\naddress = 0\ntype = "u16"\n'


def write_profile(tmp_path: Path, registers: str, top: str = 'name = "t"\nversion = 1\nunit_id = 1\n') -> Path:
    path = tmp_path / "bad.toml"
    blocks = "".join(f"[[register]]\n{r}\n" for r in registers.split("---"))
    path.write_text(top + "\n" + blocks, encoding="utf-8")
    return path


def test_default_profile_loads_with_the_documented_map() -> None:
    p = load_profile("default")
    assert (p.name, p.version, p.unit_id) == ("default", 1, 1)
    assert p.path is not None and p.path.name == "default.toml"
    assert p.by_name("belt_run").table == "coil" and p.by_name("belt_run").writable
    enc = p.by_name("encoder")
    assert (enc.table, enc.address, enc.type, enc.words, enc.word_order) == ("input", 0, "u32", 2, "big")
    sp = p.by_name("belt_speed_sp")
    assert (sp.min, sp.max, sp.unit) == (0.0, 3000.0, "mm/s")
    assert p.by_name("estop_reset").pulse
    # one request per table: the default map has no gaps
    assert p.groups() == [
        Group("coil", 0, 3), Group("discrete", 0, 6), Group("holding", 0, 4), Group("input", 0, 11),
    ]


@pytest.mark.parametrize("name", ["default", "compact"])
def test_every_shipped_profile_loads_with_the_registers_the_lane_needs(name: str) -> None:
    from simulator.plc_program import REQUIRED

    p = load_profile(name)
    assert p.name == name and all(p.has(r) for r in REQUIRED)
    assert {r.name for r in p.registers} == {r.name for r in load_profile("default").registers}


def test_groups_never_exceed_one_modbus_request_nor_split_a_32_bit_value(tmp_path: Path) -> None:
    # 130 consecutive holding registers: 124 single words, then three u32 straddling the 125 limit
    regs = [GOOD_REG.replace('"speed"', f'"w{i}"').replace("= 0", f"= {i}") for i in range(124)]
    regs += [GOOD_REG.replace('"speed"', f'"d{i}"').replace("= 0", f"= {124 + 2 * i}").replace("u16", "u32")
             for i in range(3)]
    p = load_profile(write_profile(tmp_path, "---".join(regs)))
    assert p.groups() == [Group("holding", 0, 124), Group("holding", 124, 6)]
    bits = [GOOD_REG.replace('"speed"', f'"b{i}"').replace("= 0", f"= {i}").replace('"holding"', '"coil"')
            .replace("u16", "bool") for i in range(2001)]
    assert load_profile(write_profile(tmp_path, "---".join(bits))).groups() == [Group("coil", 0, 2000), Group("coil", 2000, 1)]


def test_load_by_path_equals_load_by_name() -> None:
    by_name = load_profile("default")
    assert load_profile(by_name.path) == by_name  # type: ignore[arg-type]


def test_unknown_register_name_is_a_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="nope"):
        load_profile("default").by_name("nope")


def test_groups_split_at_gaps(tmp_path: Path) -> None:
    regs = GOOD_REG + "---" + GOOD_REG.replace('"speed"', '"a"').replace("= 0", "= 1").replace("u16", "u32") \
        + "---" + GOOD_REG.replace('"speed"', '"far"').replace("= 0", "= 10")
    p = load_profile(write_profile(tmp_path, regs))
    assert p.groups() == [Group("holding", 0, 3), Group("holding", 10, 1)]


BAD_CASES = [
    ("unknown key", GOOD_REG + "colour = 1\n", "speed", "unknown keys ['colour']"),
    ("bad table", GOOD_REG.replace('"holding"', '"flags"'), "speed", "table 'flags'"),
    ("bad type", GOOD_REG.replace('"u16"', '"u64"'), "speed", "type 'u64'"),
    ("bad access", GOOD_REG + 'access = "w"\n', "speed", "access 'w'"),
    ("bad word order", GOOD_REG + 'word_order = "middle"\n', "speed", "word_order 'middle'"),
    ("bool on holding", GOOD_REG.replace('"u16"', '"bool"'), "speed", "bool only on coil/discrete"),
    ("u16 on coil", GOOD_REG.replace('"holding"', '"coil"'), "speed", "not allowed in table 'coil'"),
    ("rw on input", GOOD_REG.replace('"holding"', '"input"') + 'access = "rw"\n', "speed", "read-only table"),
    ("32-bit in one word", GOOD_REG.replace('"u16"', '"u32"') + "words = 1\n", "speed", "needs 2 words"),
    ("min above max", GOOD_REG + "min = 10\nmax = 5\n", "speed", "min 10 > max 5"),
    ("missing type", 'name = "speed"\ntable = "holding"\naddress = 0\n', "speed", "missing keys ['type']"),
    ("negative address", GOOD_REG.replace("address = 0", "address = -1"), "speed", "address -1"),
    ("zero scale", GOOD_REG + "scale = 0\n", "speed", "scale 0"),
    ("duplicate name", GOOD_REG + "---" + GOOD_REG.replace("= 0", "= 5"), "speed", "duplicate name"),
    ("address not a number", GOOD_REG.replace("address = 0", 'address = "40001"'), "speed", "address '40001'"),
    ("address too high", GOOD_REG.replace("address = 0", "address = 65536"), "speed", "address 65536"),
    ("u32 past the end", GOOD_REG.replace("address = 0", "address = 65535").replace("u16", "u32"),
     "speed", "extends past address 65535"),
    ("f32 past the end", GOOD_REG.replace("address = 0", "address = 65535").replace("u16", "f32"),
     "speed", "extends past address 65535"),
    ("i16 scale not a number", GOOD_REG.replace("u16", "i16") + 'scale = "x"\n', "speed", "scale 'x'"),
    ("infinite scale", GOOD_REG + "scale = inf\n", "speed", "scale inf"),
    ("limit not a number", GOOD_REG + 'max = "fast"\n', "speed", "max 'fast' is not a number"),
    ("bool limit", GOOD_REG + "min = true\n", "speed", "min True is not a number"),
    ("word order on f32", GOOD_REG.replace("u16", "f32") + 'word_order = "swapped"\n', "speed", "word_order 'swapped'"),
    ("rw on discrete", GOOD_REG.replace('"holding"', '"discrete"').replace("u16", "bool") + 'access = "rw"\n',
     "speed", "read-only table 'discrete'"),
    ("bool on input", GOOD_REG.replace('"holding"', '"input"').replace("u16", "bool"), "speed", "bool only on coil/discrete"),
    ("nameless register", 'table = "holding"\naddress = 0\ntype = "u16"\n', "register #1", "missing keys ['name']"),
    (
        "overlap in bits",
        GOOD_REG.replace('"holding"', '"coil"').replace("u16", "bool") + "---"
        + GOOD_REG.replace('"speed"', '"c"').replace('"holding"', '"coil"').replace("u16", "bool"),
        "'c'",
        "coil address 0 overlaps register 'speed'",
    ),
    (
        "overlap",
        GOOD_REG.replace('"u16"', '"u32"') + "---" + GOOD_REG.replace('"speed"', '"b"').replace("= 0", "= 1"),
        "'b'",
        "overlaps register 'speed'",
    ),
]


@pytest.mark.parametrize(("case", "regs", "register", "problem"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_invalid_profile_names_file_register_and_problem(
    tmp_path: Path, case: str, regs: str, register: str, problem: str
) -> None:
    path = write_profile(tmp_path, regs)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    msg = str(info.value)
    assert str(path) in msg and register in msg and problem in msg, msg


def test_unknown_top_level_key_and_bad_toml_are_reported(tmp_path: Path) -> None:
    path = write_profile(tmp_path, GOOD_REG, top='name = "t"\nvendor = "x"\n')
    with pytest.raises(ProfileError, match=r"top level: unknown keys \['vendor'\]"):
        load_profile(path)
    path.write_text("name = ", encoding="utf-8")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(path)
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "missing.toml")


# ---- codec -----------------------------------------------------------------------------------

def reg(typ: str, order: str = "big", scale: float = 1.0) -> Register:
    table = "coil" if typ == "bool" else "holding"
    return Register(name="r", table=table, address=0, type=typ, word_order=order, scale=scale)


orders = st.sampled_from(["big", "little"])
word = st.integers(0, 0xFFFF)


@given(st.sampled_from(["u16", "i16", "u32"]), orders, st.data())
def test_integer_words_round_trip(typ: str, order: str, data: st.DataObject) -> None:
    r = reg(typ, order)
    words = data.draw(st.lists(word, min_size=r.words, max_size=r.words))
    value = decode(r, words)
    assert isinstance(value, int)
    assert encode(r, value) == words


@given(orders, st.floats(width=32, allow_nan=False))
def test_f32_values_round_trip(order: str, value: float) -> None:
    r = reg("f32", order)
    assert decode(r, encode(r, value)) == value  # type: ignore[arg-type]


@given(st.sampled_from(["u16", "i16", "u32"]), orders, st.sampled_from([0.1, 0.5, 2.0, 0.01]), st.data())
def test_scaled_values_round_trip(typ: str, order: str, scale: float, data: st.DataObject) -> None:
    lo, hi = {"u16": (0, 0xFFFF), "i16": (-0x8000, 0x7FFF), "u32": (0, 0xFFFF_FFFF)}[typ]
    raw = data.draw(st.integers(lo, hi))
    r = reg(typ, order, scale)
    value = raw * scale
    back = decode(r, encode(r, value))  # type: ignore[arg-type]
    assert math.isclose(back, value, rel_tol=1e-12, abs_tol=1e-9)


@given(st.booleans())
def test_bool_round_trip(value: bool) -> None:
    assert decode(reg("bool"), encode(reg("bool"), value)) is value  # type: ignore[arg-type]


def test_word_order_and_sign_are_as_documented() -> None:
    assert encode(reg("u32", "big"), 0x12345678) == [0x1234, 0x5678]
    assert encode(reg("u32", "little"), 0x12345678) == [0x5678, 0x1234]
    assert decode(reg("i16"), [0xFFFF]) == -1
    assert encode(reg("f32"), 1.0) == list(struct.unpack(">HH", struct.pack(">f", 1.0)))
    assert decode(reg("u16", scale=0.1), [1234]) == pytest.approx(123.4)


@pytest.mark.parametrize(("typ", "value"), [("u16", -1), ("u16", 65536), ("i16", 40000), ("u32", 2**32), ("u16", "7")])
def test_unrepresentable_values_are_refused(typ: str, value: object) -> None:
    with pytest.raises(EncodeError, match="register 'r'"):
        encode(reg(typ), value)  # type: ignore[arg-type]
