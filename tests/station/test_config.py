"""Configuration: a wrong key or value stops the start and names the file, the key path and the line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from station.config import ConfigError, load_config

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
