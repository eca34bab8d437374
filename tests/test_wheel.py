"""The wheel as it ships: built from a clean copy of the sources, it holds every file the station reads at
run time and nothing of the repository besides, and its metadata names the version, the license and the
dependencies that pyproject.toml gives.

Built offline with the test environment's own setuptools (`--no-build-isolation --no-index`); `.ci/run`
also builds it the usual, isolated way and runs the CLI and tests against it installed in a fresh venv.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds the wheel: about 10 s

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = ("station", "drivers", "simulator", "models")
# What the station opens at run time, by where it lives in the source tree (as package data).
RUNTIME_DATA = ("station/schemas/*.json", "station/ead/data/*", "station/rules/*.toml",
                "station/console/templates/*.html", "station/console/static/*", "drivers/profiles/*.toml",
                "models/default/*", "station/py.typed", "drivers/py.typed")


def _setuptools_too_old() -> str | None:
    """Why this environment cannot build the wheel offline, or None if it can."""
    wanted = next(r for r in PROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    floor = re.fullmatch(r"setuptools>=([\d.]+)", wanted)
    assert floor, f"build-system.requires {wanted!r}: this test reads only a `setuptools>=X` floor"
    try:
        have = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        return f"setuptools is not installed here, and the build needs {wanted} (pip install -e '.[test]')"
    if _release(have) < _release(floor.group(1)):
        return f"setuptools {have} is installed here, the build needs {wanted} (pip install -e '.[test]')"
    return None


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    reason = _setuptools_too_old()
    if reason:
        print(f"not building the wheel: {reason}")
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"  # a copy: no stale build/ of the checkout's leaks in, nothing is written into it
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = (tmp / "dist").glob("*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def _dist_info(wheel: zipfile.ZipFile) -> str:
    (info,) = {name.split("/")[0] for name in wheel.namelist() if name.split("/")[0].endswith(".dist-info")}
    return info


def test_it_holds_every_module_and_every_file_the_station_reads_at_run_time(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    modules = {p.relative_to(REPO).as_posix() for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    data = {p.relative_to(REPO).as_posix() for pattern in RUNTIME_DATA for p in REPO.glob(pattern) if p.is_file()}
    assert modules - names == set()
    assert data - names == set()
    for named in ("models/default/model.onnx", "models/default/manifest.json", "drivers/profiles/default.toml",
                  "station/rules/default.toml", "station/schemas/ead-record.schema.json",
                  "station/console/static/htmx-LICENSE.txt", "station/console/static/htmx-ext-sse-LICENSE.txt"):
        assert named in names  # the globs above could match nothing; these must exist


def test_it_holds_nothing_of_the_repository_but_the_packages(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert tops == {*PACKAGES, _dist_info(wheel)}  # no tests/, bench/, docs/, build/
    assert not [name for name in wheel.namelist() if "__pycache__" in name or name.endswith(".pyc")]


def test_it_carries_the_license_texts(wheel: zipfile.ZipFile) -> None:
    licenses = f"{_dist_info(wheel)}/licenses"
    assert wheel.read(f"{licenses}/LICENSE") == (REPO / "LICENSE").read_bytes()
    assert b"END OF TERMS AND CONDITIONS" in wheel.read(f"{licenses}/LICENSE")
    for vendored in ("htmx-LICENSE.txt", "htmx-ext-sse-LICENSE.txt"):
        assert f"{licenses}/station/console/static/{vendored}" in wheel.namelist()


def test_its_metadata_names_the_version_the_license_and_the_dependencies(wheel: zipfile.ZipFile) -> None:
    meta = Parser().parsestr(wheel.read(f"{_dist_info(wheel)}/METADATA").decode())
    project = PROJECT["project"]
    assert (meta["Name"], meta["Version"]) == (project["name"], project["version"])
    assert meta["License-Expression"] == project["license"]
    assert meta["Requires-Python"] == project["requires-python"]
    runtime = {_requirement(r) for r in meta.get_all("Requires-Dist", []) if "extra ==" not in r}
    assert runtime == {_requirement(r) for r in project["dependencies"]}
    entry_points = wheel.read(f"{_dist_info(wheel)}/entry_points.txt").decode()
    assert "station = station.cli.app:main" in entry_points


def _requirement(text: str) -> tuple[str, frozenset[str]]:
    """A requirement as (normalised name, its specifiers): setuptools reorders `>=3.5,<4` as `<4,>=3.5`."""
    name, specifiers = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", text).groups()  # type: ignore[union-attr]
    return re.sub(r"[-_.]+", "-", name).lower(), frozenset(s.strip() for s in specifiers.split(",") if s.strip())
