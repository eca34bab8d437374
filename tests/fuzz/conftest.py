"""The fuzz set's hypothesis profile and its report: examples run and crashes, per input."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz import harness

# Over the project's profile: no database of old failures to replay (each run is the same size), and the
# health checks that would fail a slow generator on a busy machine off. Found failures print their blob.
settings.register_profile("fuzz", settings.get_profile("station"), database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture,
                                                 HealthCheck.filter_too_much])

_INPUTS: dict[str, str] = {}  # test id -> the input its module fuzzes
_KNOWN: Counter[str] = Counter()  # xfail'd findings, per input


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = getattr(getattr(item, "module", None), "INPUT", None)
        if isinstance(name, str) and "tests/fuzz/" in item.nodeid:
            _INPUTS[item.nodeid] = name


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and hasattr(report, "wasxfail") and report.nodeid in _INPUTS:
        _KNOWN[_INPUTS[report.nodeid]] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not harness.EXAMPLES:
        return
    for name in dict.fromkeys(_INPUTS.values()):
        known = f", {_KNOWN[name]} known findings (xfail)" if _KNOWN[name] else ""
        terminalreporter.write_line(f"fuzz: {name} {harness.EXAMPLES[name]} examples, "
                                    f"{harness.CRASHES[name]} crashes{known}")
