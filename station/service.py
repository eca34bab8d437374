"""systemd's service protocol (sd_notify(3)), spoken over $NOTIFY_SOCKET without libsystemd.

Under `Type=notify` systemd waits for `READY=1` before it counts the station as started, and with
`WatchdogSec=` it restarts the station when `WATCHDOG=1` stops coming. The station says:

- `READY=1` once the lane is polled (the PLC has answered the core) and the model is loaded and warm
  (it is, before the lane's tasks start). A PLC that does not answer within `ready_grace_s` does not
  hold the start for ever: READY comes anyway, with a STATUS that says so, so that systemd does not
  kill and restart a station the technician needs to diagnose (the lane holds the belt and raises
  its alarm; the console and the CLI are up).
- `WATCHDOG=1` from a task on the event loop, every third of the interval systemd sets: a loop that
  hangs stops the pets and is restarted; a loop that merely stalls for a moment is not.
- `STATUS=...` (what `systemctl status` shows): the lane's state and counts, when they change.
- `STOPPING=1` when a stop begins (SIGTERM): the belt stops, the store flushes, the link says `stopping`.

Outside systemd (no NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

READY_GRACE_S = 60.0  # below the unit's TimeoutStartSec (120 s)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        where = env.get("NOTIFY_SOCKET", "")
        # "@name" is Linux's abstract namespace: the address starts with a NUL byte
        self.address = "\0" + where[1:] if where.startswith("@") else where
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._socket: socket.socket | None = None
        self._last_status = ""
        self._ready = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> None:
        """One datagram of `KEY=value` lines. Never raises: systemd gone is no reason to stop the lane."""
        if not self.address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError as err:
            log.warning("systemd notification %s not sent to %s: %s", fields[0], self.address.lstrip("\0"), err)

    def ready(self, status: str) -> None:
        self._last_status, self._ready = status, True
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.send(f"STATUS={text}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: belt stopped, store flushing, link saying stopping")

    async def pet_forever(self, status: Callable[[], str] | None = None) -> None:
        """WATCHDOG=1 every third of the interval, from the loop (after READY, with the STATUS when it changed)."""
        if self.watchdog_s is None:
            return
        period = self.watchdog_s / 3
        while True:
            self.send("WATCHDOG=1")
            if status is not None and self._ready:
                self.status(status())
            await asyncio.sleep(period)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


async def notify_ready(notifier: Notifier, polled: Callable[[], bool], describe: Callable[[], str],
                       grace_s: float = READY_GRACE_S) -> None:
    """READY=1 once `polled()` (the core has seen the PLC answer), or after `grace_s` without it."""
    deadline = time.monotonic() + grace_s
    while not polled() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if polled():
        notifier.ready(describe())
    else:
        log.warning("the PLC has not answered in %g s: telling systemd the station is up anyway "
                    "(the lane holds the belt; see its alarms)", grace_s)
        notifier.ready(f"up, but the PLC has not answered in {grace_s:g} s: {describe()}")
