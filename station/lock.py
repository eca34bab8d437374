"""One station per data folder: an exclusive lock on `station.lock`, naming the holder's PID.

`station run` takes the lock before it opens anything in the folder and keeps it until it exits; the
kernel releases it when the process dies however it dies (flock), so a crashed daemon never leaves a
stale lock. A second `station run` on the same folder is refused with the running one's PID, and so
never touches the first one's control socket, store or spool.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = "station.lock"


class DataDirLocked(Exception):
    """Another process holds the data folder."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path, self.pid = path, pid
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"a station is already running on {path.parent} ({who} holds {path})")


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd = -1

    def __enter__(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirLocked(self.path, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # the file stays: removing it would race with the next taker
            os.close(self._fd)  # releases the lock
            self._fd = -1


def holder(data_dir: Path) -> int | None:
    """The PID of the station running on `data_dir` (0 when it has not written it yet), or None when none
    holds it."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or 0  # held, its PID not written yet (the moment after the holder took it)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
