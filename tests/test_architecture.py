"""The house rules of docs/architecture.md, checked on the source: who may import whom, and no cycles.

Imports are read from the code (every `import` and `from ... import`, at the top or inside a function,
but not those under `if TYPE_CHECKING:`, which never run), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("station", "drivers", "simulator", "models")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The first-party modules `path` imports (a `from pkg import name` counts as pkg.name if that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES and name in MODULES}


MODULES = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def importers_of(prefix: str, within: str) -> dict[str, set[str]]:
    return {m: {i for i in deps if i == prefix or i.startswith(prefix + ".")}
            for m, deps in GRAPH.items() if (m == within or m.startswith(within + "."))
            and any(i == prefix or i.startswith(prefix + ".") for i in deps)}


def test_no_import_cycle_anywhere() -> None:
    """Tarjan's strongly connected components over the whole first-party import graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in GRAPH[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    assert not cycles, f"import cycles: {cycles}"


def test_the_station_imports_the_simulator_and_the_model_tools_only_from_its_commands_that_run_them() -> None:
    allowed = {"station.cli.simulated", "station.cli.run",  # `station run --simulate`, `station sim`
               "station.cli.model"}  # `station model eval|bench`: the model tools in models/
    for other in ("simulator", "models"):
        users = importers_of(other, "station")
        assert set(users) <= allowed, {m: users[m] for m in set(users) - allowed}
    assert not importers_of("simulator", "station.daemon") and not importers_of("simulator", "station.lane")


def test_drivers_import_nothing_above_them() -> None:
    for other in ("station", "simulator", "models"):
        assert not importers_of(other, "drivers"), importers_of(other, "drivers")


def test_the_simulator_and_the_model_tools_use_only_the_kernel_and_plain_values_of_the_station() -> None:
    allowed = {"station.kernel", "station.kernel.imaging", "station.kernel.detector", "station.config",
               "station.ead.s10", "station.domain", "station.inference", "station.spool"}
    for user in ("simulator", "models"):
        used = set().union(*importers_of("station", user).values()) if importers_of("station", user) else set()
        used.discard("station")
        assert used <= allowed, f"{user} imports {sorted(used - allowed)} of the station application"


def test_the_kernel_loads_without_the_station_application() -> None:
    code = ("import sys, station.kernel.detector, station.kernel.imaging; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('station', 'drivers', 'simulator', 'models'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout.split()
    assert set(loaded) == {"drivers", "drivers.xde", "station", "station.kernel", "station.kernel.detector",
                           "station.kernel.imaging"}


def test_the_domain_and_the_ead_package_are_pure() -> None:
    """The item's vocabulary imports nothing of the station; station/ead/ (the CN 23 record, the S10 id,
    the data-quality checks) only the domain and itself: the intake and the feedback, which do I/O, are
    beside it (station/intake.py, station/ead_quality.py)."""
    assert not GRAPH["station.domain"]
    for name in (m for m in GRAPH if m == "station.ead" or m.startswith("station.ead.")):
        assert all(d == "station.domain" or d == "station.ead" or d.startswith("station.ead.") for d in GRAPH[name]), \
            (name, GRAPH[name])


# The layers of docs/architecture.md, lowest first: a module imports only from its own layer or below.
LAYERS: list[tuple[str, ...]] = [
    ("drivers",),
    ("station.domain", "station.ead.record", "station.ead.codes", "station.ead.s10", "station.ead.checks",
     "station.ead.schema", "station.ead", "station.kernel", "station.config", "station.alarms", "station.spool",
     "station.lock", "station.contract", "station.alerts", "station"),
    ("station.risk", "station.rules", "station.lane.messages", "station.lane.position", "station.lane.track",
     "station.lane.gate", "station.lane.core", "station.lane.status", "station.lane"),
    ("station.store", "station.writer", "station.summary", "station.inference", "station.mqtt_link",
     "station.intake", "station.ead_quality", "station.lane.recorder", "station.accounts", "station.reviews",
     "station.mqtt_tls", "station.presence", "station.customs", "station.service",
     "station.metrics", "station.holds", "station.retention", "station.space"),
    ("station.lane.runtime", "station.model_swap", "station.control", "station.commands", "station.console"),
    ("station.daemon", "station.preflight"),
    ("station.cli",),
]


def layer_of(module: str) -> int:
    """The layer of the longest prefix of `module` that LAYERS names."""
    best, found = -1, None
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), number
    assert found is not None, f"{module} is in no layer of docs/architecture.md"
    return found


def test_each_layer_imports_only_downward() -> None:
    upward = {f"{m} -> {d}" for m, deps in GRAPH.items() if m.split(".")[0] in ("station", "drivers")
              for d in deps if d.split(".")[0] in ("station", "drivers") and layer_of(d) > layer_of(m)}
    assert not upward, sorted(upward)
