"""The `station` command's parser and entry point: one module per command group, this one assembles them.

`--log-level` is accepted before the command and after it; a closed output pipe (`station inspect
--json | head`) ends the command quietly with 141; `station --version` prints the installed version.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from station import logs
from station.cli.audit import add_audit_commands
from station.cli.backup import add_backup_commands
from station.cli.common import INTERRUPTED, SIGPIPE_EXIT, USAGE
from station.cli.diag import add_diag_commands
from station.cli.ead import add_ead_commands
from station.cli.item import add_item_commands
from station.cli.lane import add_lane_commands, add_model_control_commands
from station.cli.model import add_model_commands
from station.cli.rules import add_rules_commands
from station.cli.run import add_run_commands
from station.cli.tools import add_tool_commands
from station.cli.user import add_user_commands
from station.config import ConfigError
from station.version import VERSION

LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        return int(args.handler(args))
    except ConfigError as err:
        print(f"configuration error:\n{err}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`| head`), which is how such a pipe ends. Point stdout at
        # /dev/null so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_EXIT


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="station", description="Edge controller of a postal X-ray screening lane.")
    top.add_argument("--version", action="version", version=f"station {VERSION}")
    top.add_argument("--log-level", default="warning", choices=LOG_LEVELS)
    top.add_argument("--log-format", default="plain", choices=logs.FORMATS,
                     help="plain lines (journald-friendly: no time stamp under systemd), or one JSON object a line")
    sub = top.add_subparsers(required=True, metavar="COMMAND")
    add_run_commands(sub)
    add_lane_commands(sub)
    add_tool_commands(sub)
    add_ead_commands(sub)
    add_diag_commands(sub)
    add_model_control_commands(add_model_commands(sub))
    add_rules_commands(sub)
    add_backup_commands(sub)
    add_audit_commands(sub)
    add_user_commands(sub)
    add_item_commands(sub)
    for command in _commands(top):  # also after the command: `station run --simulate --log-level info`
        command.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS,
                             help="log level (also accepted before the command)")
        command.add_argument("--log-format", default=argparse.SUPPRESS, choices=logs.FORMATS,
                             help="plain or json (also accepted before the command)")
    return top


def _commands(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command that runs something: the parsers at the ends of the subcommand tree."""
    groups = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return [p]
    return [leaf for g in groups for child in dict.fromkeys(g.choices.values()) for leaf in _commands(child)]
