"""`station diag scanner selftest`: talk to the X-ray scanner through the station's own driver.

Steps, in order: HELLO (protocol version and identity), STATUS, SELFTEST, TUBE. A step passes on an
OK reply (SELFTEST also needs result=pass). After a timeout or a dead link the remaining steps are
skipped, because each would only wait out the same timeout.
"""

from __future__ import annotations

import argparse
import asyncio

from drivers.scanner import Scanner, ScannerError, ScannerRejected, ScannerTimeout
from drivers.scanner_protocol import PROTOCOL_VERSION, Frame
from station.cli.common import load
from station.cli.diag.errors import FAIL, PASS
from station.cli.diag.render import table

STEPS: tuple[tuple[str, dict[str, int]], ...] = (
    ("HELLO", {"proto": PROTOCOL_VERSION}),
    ("STATUS", {}),
    ("SELFTEST", {}),
    ("TUBE", {}),
)


def selftest(args: argparse.Namespace) -> int:
    config = load(args)
    path = args.port or config.scanner.port
    return asyncio.run(_selftest(path, config.scanner.baudrate, args.timeout))


def judge(command: str, reply: Frame) -> str | None:
    """Why an OK reply still fails the step, or None if it passes."""
    if command == "HELLO" and reply.fields.get("proto") != str(PROTOCOL_VERSION):
        return f"scanner speaks proto={reply.fields.get('proto')}, the station needs {PROTOCOL_VERSION}"
    if command == "SELFTEST" and reply.fields.get("result") != "pass":
        return f"self-test result={reply.fields.get('result', '(none)')}"
    return None


async def _selftest(path: str, baudrate: int, timeout: float) -> int:
    rows: list[list[str]] = []
    stopped: str | None = None  # why the remaining steps are not sent
    async with Scanner(path, baudrate=baudrate, timeout=timeout, name="scanner") as scanner:
        for command, fields in STEPS:
            if stopped is not None:
                rows.append([command, "SKIP", f"not sent: {stopped}"])
                continue
            try:
                reply = await scanner.command(command, **fields)
            except ScannerRejected as err:
                rows.append([command, "FAIL", f"ERR {err.code}: {err.text}"])
                continue
            except ScannerTimeout as err:
                stopped = "the scanner does not answer"
                rows.append([command, "FAIL", f"timeout: {err}"])
                continue
            except ScannerError as err:
                stopped = "no link"
                rows.append([command, "FAIL", str(err)])
                continue
            shown = " ".join(f"{k}={v}" for k, v in reply.fields.items())
            problem = judge(command, reply)
            rows.append([command, "FAIL" if problem else "PASS", f"{problem}: {shown}" if problem else shown])
        health = scanner.health
    print(f"scanner {path} @ {baudrate}")
    print("\n".join(table(("step", "result", "reply"), rows)))
    passed = sum(row[1] == "PASS" for row in rows)
    errors = " ".join(f"{k}={v}" for k, v in sorted(health.errors.items()))
    if errors:
        print(f"line errors: {errors}")
    verdict = "passed" if passed == len(STEPS) else "FAILED"
    print(f"selftest {verdict} ({passed}/{len(STEPS)})")
    return PASS if passed == len(STEPS) else FAIL
