"""Config files: the TOML file a site writes, through `station.config.load_config(path)` (what `station run`
and `station config check` call: read, `tomllib`, then `parse_config(raw, source, text)`).

The contract (station/config.py): a Config, or ConfigError whose message names the file and, for a value
that cannot be used, the key path and, where the key is written in the file, its line; never another
exception. Mutated from station.example.toml: values of every TOML type and out of range, unknown keys,
keys given twice, lines cut or dropped, bytes flipped.

Findings 12-18 (station/config.py: a NUL in a path, true/false for a number, deep nesting, a 5000-digit
integer, a dotted key without its line, a file that is not UTF-8, a line break in a value) are fixed;
each has its regression test at the end.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from station.config import Config, ConfigError, load_config, parse_config
from tests.fuzz.harness import budget, fuzzes, mutated

INPUT = "config files"

EXAMPLE = (Path(__file__).resolve().parents[2] / "station.example.toml").read_text()
LINES = EXAMPLE.splitlines()
_HEADER = re.compile(r"^\[([a-z.]+)\]")
_KEY = re.compile(r"^([a-z_]+) = ")


def keys() -> list[tuple[int, str, str]]:
    """(line number, section, key) of every key the example sets."""
    found, section = [], ""
    for number, line in enumerate(LINES, start=1):
        if header := _HEADER.match(line):
            section = header[1]
        elif key := _KEY.match(line):
            found.append((number, section, key[1]))
    return found


KEYS = keys()
SECTIONS = sorted({section for _, section, _ in KEYS})
values = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str), st.sampled_from(["0", "-1", "1e308", "-0.0", "nan", "inf", "-inf",
                                                                "true", "false", '""', '"x"', "[]", "[1, 2]", "{}",
                                                                "{type = \"rtu\"}", "1979-05-27T07:32:00Z",
                                                                "07:32:00", "0x10", "1_000", "'lit'", '"""ab"""']),
    st.floats(allow_nan=False).map(repr).filter(lambda t: "e" not in t or "." in t),
    st.text(max_size=20).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)


def config_text(draw: st.DrawFn) -> tuple[str, list[tuple[int, str, str, str]]]:
    """The example with some keys' values replaced, some keys added or given twice: the text, and each change
    (line, section, key, new value)."""
    lines = list(LINES)
    changed = []
    for number, section, key in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True)):
        value = draw(values)
        lines[number - 1] = f"{key} = {value}"
        changed.append((number, section, key, value))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from([f"{k} = {draw(values)}" for _, _, k in KEYS] + [
            "colour = 1", "[lane]", "[unknown]", "[[lane]]", "x.y = 1", "=", "[", "a = 1 # c"])))
        changed = [(n + 1 if n > at else n, s, k, v) for n, s, k, v in changed]
    return "\n".join(lines) + "\n", changed


def assert_config_error(err: ConfigError, source: str, text: str) -> None:
    message = str(err)
    assert message and "Traceback" not in message
    for line in message.splitlines():
        assert line.startswith(source), line
        where = line[len(source):]
        assert re.match(r"(:\d+)?: ", where), line
        if number := re.match(r":(\d+): ", where):
            assert 1 <= int(number[1]) <= max(1, len(text.splitlines()))


@st.composite
def edited(draw: st.DrawFn) -> tuple[str, list[tuple[int, str, str, str]]]:
    return config_text(draw)


@budget(250)
@given(edited())
@fuzzes(INPUT)
def test_a_value_that_cannot_be_used_is_named_with_its_key_and_line(
        tmp_path_factory: pytest.TempPathFactory, case: tuple[str, list[tuple[int, str, str, str]]]) -> None:
    text, changed = case
    path = tmp_path_factory.mktemp("config") / "station.toml"
    path.write_text(text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raw = None
    try:
        config = load_config(path)
    except ConfigError as err:
        assert_config_error(err, str(path), text)
        if raw is not None:  # valid TOML: each problem names a key path, a changed key with its own line
            assert "not valid TOML" not in str(err)
            at = {f"{section}.{key}": number for number, section, key, _ in changed}
            for line in str(err).splitlines():
                found = re.match(rf"{re.escape(str(path))}(?::(\d+))?: ([^:]+): ", line)
                assert found, line
                if found[2] in at:
                    assert found[1] == str(at[found[2]]), (line, at)
        return
    assert raw is not None
    for _, section, key, _ in changed:  # what was set is what the config holds, of its own type
        given_value = raw
        for part in (*section.split("."), key):
            given_value = given_value[part]
        held = _default_of(config, section, key)
        if isinstance(held, float) and isinstance(given_value, int | float):
            assert held == given_value or (math.isnan(held) and math.isnan(given_value))


def _default_of(config: Config, section: str, key: str) -> object:
    node: Any = config
    for part in (*section.split("."), key):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return node


@budget(250)
@given(mutated(EXAMPLE.encode(), most=8))
@example(EXAMPLE.replace("[lane]", "[lane").encode())
@example(b"")
@fuzzes(INPUT)
def test_any_bytes_give_a_config_or_a_config_error_naming_the_file(tmp_path_factory: pytest.TempPathFactory,
                                                                    data: bytes) -> None:
    path = tmp_path_factory.mktemp("config") / "station.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as err:
        assert_config_error(err, str(path), data.decode("utf-8", "replace"))


@budget(200)
@given(st.dictionaries(st.sampled_from([*SECTIONS, "x"]), st.dictionaries(
    st.sampled_from([k for _, _, k in KEYS] + ["type", "zz"]), st.none() | st.booleans() | st.integers()
    | st.floats() | st.text(max_size=10) | st.lists(st.integers(), max_size=2), max_size=4), max_size=4))
@fuzzes(INPUT)
def test_parse_config_names_each_bad_key_of_any_raw_table(raw: dict[str, Any]) -> None:
    try:
        parse_config(raw)
    except ConfigError as err:
        for line in str(err).splitlines():
            assert line.startswith("<config>: ") and line.split(": ")[1], line


# ---- the findings in station/config.py, each its own regression test ----------------------------------

def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "station.toml"
    path.write_text(text)
    return load_config(path)


# finding 14, fixed in station/config.py
def test_deeply_nested_arrays_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_text(tmp_path, "[lane]\nscale_mm = " + "[" * 5000 + "]" * 5000 + "\n")


# finding 15, fixed in station/config.py
def test_an_integer_of_5000_digits_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_text(tmp_path, "[simulator]\nseed = " + "9" * 5000 + "\n")


# finding 13, fixed in station/config.py
def test_a_boolean_is_not_a_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":2: web\.port: "):
        load_text(tmp_path, "[web]\nport = false\n")


# finding 12, fixed in station/config.py
def test_a_nul_in_a_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r":2: storage\.data_dir: "):
        load_text(tmp_path, '[storage]\ndata_dir = "var\\u0000x"\n')


# finding 16, fixed in station/config.py
def test_a_dotted_key_is_named_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"station\.toml:2: lane\.scale_mm: "):
        load_text(tmp_path, '# a site\nlane.scale_mm = "x"\n')


# finding 17, fixed in station/config.py
def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_bytes(b"\xff\xfe[lane]\n")
    with pytest.raises(ConfigError, match=r"station\.toml: "):
        load_config(path)


# finding 18, fixed in station/config.py
def test_each_line_of_a_config_error_is_one_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, '[plc.link]\ntype = """a\nb"""\n')
    assert all(line.startswith(str(tmp_path / "station.toml")) for line in str(caught.value).splitlines())
