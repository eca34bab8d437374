"""What every command group shares: exit codes, the configuration arguments and their loading, number
arguments, and the one way to talk to the running daemon."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from station.config import Config, load_config

OK, FAILED, USAGE = 0, 1, 2
INTERRUPTED, SIGPIPE_EXIT = 130, 141  # the shell's codes for Ctrl-C and for an output pipe closed (`| head`)


def config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, help="configuration file (TOML); default: built-in defaults")
    p.add_argument("--data-dir", type=Path, help="override storage.data_dir")


def load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if args.data_dir is not None:
        config = config.model_copy(update={"storage": config.storage.model_copy(update={"data_dir": args.data_dir})})
    return config


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from err
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from err
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def tell_daemon(args: argparse.Namespace, action: str, timeout: float = 5.0,
                show: Callable[[dict[str, Any]], list[str]] | None = None, **fields: object) -> int:
    """One command to the running daemon's control socket; its reply on standard output, as JSON or as
    `show` writes it for a person (with the refusal or error on standard error)."""
    from station.control import send, socket_path

    path = socket_path(load(args).storage.data_dir)
    try:
        reply: dict[str, Any] = asyncio.run(send(path, action, timeout, **fields))
    except (OSError, TimeoutError) as err:
        print(f"no station answering on {path}: {err}", file=sys.stderr)
        return FAILED
    if show is None:
        print(json.dumps(reply))
    else:
        if not reply.get("ok"):
            print(f"refused: {reply.get('error') or ', '.join(map(str, reply.get('refused', [])))}", file=sys.stderr)
        if "state" in reply:
            print("\n".join(show(reply)))
    return OK if reply.get("ok") else FAILED
