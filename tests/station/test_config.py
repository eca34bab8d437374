"""Configuration: a wrong key or value stops the start and names the file, the key path and the line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from station.config import Config, ConfigError, key_lines, line_of, load_config
from station.kernel.detector import DEFAULT_MODEL

EXAMPLE = Path(__file__).resolve().parents[2] / "station.example.toml"


def run_station(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True, text=True, timeout=60)


def test_the_example_configuration_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.station.site and config.plc.profile == "default"


def test_unknown_key_is_named_with_its_path_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "station.toml"
    bad.write_text('[station]\nsite = "X"\n\n[plc]\nhost = "127.0.0.1"\npoll_intervall_s = 0.02\n')
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert f"{bad}:6: plc.poll_intervall_s: unknown key" in str(err.value)


def test_bad_value_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "station.toml"
    bad.write_text("[mqtt]\nport = 70000\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert f"{bad}:2: mqtt.port:" in str(err.value) and "65535" in str(err.value)


def test_geometry_must_be_in_belt_order(tmp_path: Path) -> None:
    bad = tmp_path / "station.toml"
    bad.write_text("[lane]\ngate_mm = 1000\n")
    with pytest.raises(ConfigError, match="lane: .*positions must increase"):
        load_config(bad)


def test_relative_data_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    good = tmp_path / "etc" / "station.toml"
    good.parent.mkdir()
    good.write_text('[storage]\ndata_dir = "data"\n')
    assert load_config(good).storage.data_dir == tmp_path / "etc" / "data"


def test_config_check_command_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "station.toml"
    bad.write_text("[scanner]\nbaud = 9600\n")
    done = run_station("config", "check", str(bad))
    assert done.returncode == 2
    assert "scanner.baud: unknown key" in done.stderr
    good = run_station("config", "check", str(EXAMPLE))
    assert good.returncode == 0, good.stderr


def test_run_refuses_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "station.toml"
    bad.write_text("[plc]\nport = 'five'\n")
    done = run_station("run", "--simulate", "--config", str(bad))
    assert done.returncode == 2
    assert "plc.port" in done.stderr


# ---- line numbers, and the example file as the list of every key ----------------------------------

def _leaves(data: dict[str, object], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in data.items():
        path = prefix + (key,)
        out += _leaves(value, path) if isinstance(value, dict) else [path]  # type: ignore[arg-type]
    return out


def test_every_key_of_the_example_file_is_found_on_its_own_line() -> None:
    text = EXAMPLE.read_text()
    lines = text.splitlines()
    leaves = _leaves(tomllib.loads(text))
    assert len(leaves) > 40
    for path in leaves:
        number = line_of(text, path)
        assert number is not None, path
        assert re.match(rf"\s*{re.escape(path[-1])}\s*=", lines[number - 1]), (path, number, lines[number - 1])


@pytest.mark.parametrize("header", ["[plc.link]  # how to reach the PLC", "[ plc . link ]", "[plc.link]#x"])
def test_a_bad_value_under_a_commented_header_is_named_on_its_line(tmp_path: Path, header: str) -> None:
    bad = tmp_path / "station.toml"
    bad.write_text(f'[plc]   # the conveyor\nprofile = "default"\n\n{header}\nhost = "plc"\nport = 70000\n')
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert f"{bad}:6: plc.link.port:" in str(err.value)


def test_the_keys_of_an_inline_table_are_on_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "station.toml"
    bad.write_text('[plc]\nlink = { type = "tcp", port = 0 }  # inline\n')
    with pytest.raises(ConfigError, match=rf"{re.escape(str(bad))}:2: plc\.link\.port:"):
        load_config(bad)


def _model_keys(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    keys: set[tuple[str, ...]] = set()
    for name, field in model.model_fields.items():
        path = prefix + (name,)
        kinds = [a for a in typing.get_args(field.annotation) or (field.annotation,)]
        kinds = [typing.get_args(k)[0] if typing.get_origin(k) is typing.Annotated else k for k in kinds]
        sections = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if sections:
            for section in sections:
                keys |= _model_keys(section, path)
        else:
            keys.add(path)
    return keys


def test_every_key_the_station_reads_is_in_the_example_file() -> None:
    """Set, or shown commented out where it has no value to show (a password, an RTU port)."""
    text = EXAMPLE.read_text()
    uncommented = re.sub(r"^#\s?(?=[a-z_]+\s*=)", "", text, flags=re.M)  # `# key = ...` lines become keys
    written = set(key_lines(uncommented))
    missing = sorted(".".join(k) for k in _model_keys(Config) if k not in written)
    assert not missing, f"keys the station reads that station.example.toml does not show: {missing}"


# ---- config check is the start's dry run --------------------------------------------------------

def _checked(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "station.toml"
    path.write_text(text)
    return run_station("config", "check", str(path))


@pytest.mark.parametrize("text, line, message", [
    ('[plc]\nprofile = "nosuch"\n', 2, "plc.profile: .*nosuch.toml: cannot read profile"),
    ('[rules]  # site rules\npath = "missing-rules.toml"\n', 2, "rules.path: .*missing-rules.toml"),
    ('[model]\npath = "no-model"\n', 2, "model.path: .*no-model/manifest.json: cannot read manifest.*MANUAL_ONLY"),
    ('[scanner]\nport = "ttyUSB0"\n', 2, "scanner.port: 'ttyUSB0' is not an absolute device path"),
    ('[barcode]\nport = "/tmp"\n', 2, "barcode.port: /tmp is a folder"),
    ('[scanner]\nport = "/dev/ttyUSB0"\n[barcode]\nport = "/dev/ttyUSB0"\n', 4, "barcode.port: .*also scanner.port"),
    ('[plc.link]\ntype = "rtu"\nport = "/srv/nothing/ttyS9"\n', 3, "plc.link.port: .* does not exist"),
    ('[mqtt]\ntls = true\nca_file = "site-ca.crt"\n', 3, "mqtt.ca_file: ca_file .*/site-ca.crt: cannot read it"),
])
def test_config_check_refuses_what_the_start_would(tmp_path: Path, text: str, line: int, message: str) -> None:
    done = _checked(tmp_path, text)
    assert done.returncode == 2, done.stdout
    assert re.search(rf"station.toml:{line}: {message}", done.stderr), done.stderr


def test_config_check_refuses_a_model_whose_hash_fails(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model)
    onnx = model / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    done = _checked(tmp_path, '[model]\npath = "model"\n')
    assert done.returncode == 2 and re.search(r"station.toml:2: model.path: .*hash mismatch", done.stderr), done.stderr


def test_the_start_refuses_a_missing_profile_with_exit_2_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path}/data"\n\n[plc]\nprofile = "nosuch"\n')
    done = run_station("run", "--config", str(path))
    assert done.returncode == 2 and f"{path}:5: plc.profile:" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "station.db").exists(), "a refused start opens nothing"


def test_config_check_passes_the_example_file_and_says_what_it_checked() -> None:
    done = run_station("config", "check", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    assert "PLC profile default" in done.stdout and "rules default-4" in done.stdout
