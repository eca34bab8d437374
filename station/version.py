"""The station software's version: `VERSION`, the one value every reader shows.

pyproject.toml's `[project] version` is the only place it is written; this module reads it back from the
installed distribution's metadata, once, at import. `station --version`, the control socket's `status`
(`station lane status`), the MQTT `status` and `birth` messages and the metrics all show this value.

An editable install (`pip install -e .`) carries the version it was installed with: after changing
pyproject.toml's version, install again. A source tree that was never installed reports `0+unknown` (a
valid PEP 440 version, so a consumer that parses versions does not fail on it).
"""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "screening-station"  # pyproject.toml's [project] name
UNKNOWN = "0+unknown"


def installed_version(distribution: str = DISTRIBUTION) -> str:
    """The installed distribution's version, or UNKNOWN where it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return UNKNOWN


VERSION = installed_version()
