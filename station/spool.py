"""Reading and keeping the scanner's spool files, which the station does not trust.

The scanner (or whoever can write its export folder) decides what lies in the spool. A symbolic link
to /dev/zero would exhaust memory, a FIFO would block the reading thread for good, a huge file would
be read whole. So a spool file is opened without following a link and without blocking, checked on
its descriptor to be a regular file no bigger than the limit, and read or copied from that same
descriptor, never more than the limit. Kept scans are personal data: folders 0700, files 0600.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
# link() fails with these where a hard link cannot be made (another filesystem, hard links
# protected or unsupported, too many links): copy instead.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
MAX_SAME_NAME = 1000  # kept files named alike in one day folder: name, name-1, ... name-999


class SpoolError(Exception):
    """A spool file that cannot be read or kept; the message names the path and the problem."""


def read_spool_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, refused (SpoolError) when it is missing, a symbolic
    link (even to a regular file), a FIFO, socket, device or directory, or larger than ``max_bytes``.
    Never blocks on the open and never holds more than ``max_bytes`` + 1 bytes: a file that grows
    past the limit while it is read is refused too."""
    fd, _ = _open_regular(path, max_bytes)
    try:
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(_CHUNK, max_bytes + 1 - total)):
            total += len(chunk)
            if total > max_bytes:
                raise SpoolError(f"{path}: grew past the limit of {max_bytes} bytes while being read")
            chunks.append(chunk)
    except OSError as err:
        raise SpoolError(f"{path}: cannot read: {err.strerror}") from err
    finally:
        os.close(fd)
    return b"".join(chunks)


def keep_image(source: Path, images_dir: Path, *, name: str, max_bytes: int) -> Path:
    """Move the spooled scan ``source`` to ``images_dir/YYYY-MM-DD/name`` (UTC day) and return where
    it went. Missing folders are made 0700; the kept file is 0600. An existing file is never
    overwritten: a name already taken gets a counter (``stem-1.xde``, ``stem-2.xde``, ...).
    The source is checked as by read_spool_file. On one filesystem the file is hard-linked, across
    filesystems it is copied; either way it is fsynced, with its folder, before the source is
    unlinked. Any failure raises SpoolError with the source still in the spool and no kept file,
    whole or partial, left behind."""
    _check_name(name)
    fd, st = _open_regular(source, max_bytes)
    try:
        folder = images_dir / datetime.now(UTC).strftime("%Y-%m-%d")
        _private_folders(folder)
        target = _link(fd, st, source, folder, name)
        if target is None:
            target = _copy(fd, source, folder, name, max_bytes)
        try:
            _fsync_folder(folder)
            _unlink_source(source, st)
        except SpoolError:
            _discard(target)
            raise
    finally:
        os.close(fd)
    return target


def _open_regular(path: Path, max_bytes: int) -> tuple[int, os.stat_result]:
    """An open descriptor of ``path`` and its stat, checked: a regular file of at most max_bytes."""
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    try:
        # A first look without opening, so that a device node is not even opened (opening one can
        # have effects); the descriptor's fstat below is what decides.
        _refuse_unless_regular(path, os.lstat(path))
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError as err:
        raise SpoolError(f"{path}: no such file in the spool") from err
    except OSError as err:
        if err.errno == errno.ELOOP:  # replaced by a link since the lstat
            raise SpoolError(f"{path}: is a symbolic link; only regular files are read from the spool") from err
        raise SpoolError(f"{path}: cannot open: {err.strerror}") from err
    try:
        st = os.fstat(fd)
        _refuse_unless_regular(path, st)
        if st.st_size > max_bytes:
            raise SpoolError(f"{path}: {st.st_size} bytes, larger than the limit of {max_bytes} bytes")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _refuse_unless_regular(path: Path, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISLNK(st.st_mode):
        try:
            what = f"a symbolic link (to {os.readlink(path)})"
        except OSError:
            what = "a symbolic link"
    else:
        what = _KINDS.get(stat.S_IFMT(st.st_mode), f"not a regular file (mode {st.st_mode:o})")
    raise SpoolError(f"{path}: is {what}; only regular files are read from the spool")


_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFDIR: "a directory", stat.S_IFSOCK: "a socket"}


def _check_name(name: str) -> None:
    # The name is built from the scanner's scan id: it must stay a plain name inside the day folder.
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise SpoolError(f"{name!r}: not a plain file name for a kept image")


def _private_folders(folder: Path) -> None:
    """Make the missing folders up to ``folder``, each 0700 whatever the umask (existing ones stay)."""
    missing: list[Path] = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
            os.chmod(path, 0o700)  # mkdir's mode is cut by the umask
        except FileExistsError:
            if not path.is_dir():
                raise SpoolError(f"{path}: exists and is not a folder; cannot keep images there") from None
        except OSError as err:
            raise SpoolError(f"{path}: cannot make the image folder: {err.strerror}") from err


def _candidates(folder: Path, name: str) -> Iterator[Path]:
    yield folder / name
    stem, suffix = os.path.splitext(name)
    for n in range(1, MAX_SAME_NAME):
        yield folder / f"{stem}-{n}{suffix}"


def _all_taken(folder: Path, name: str) -> SpoolError:
    return SpoolError(f"{folder / name}: this name and {MAX_SAME_NAME - 1} numbered ones are all taken")


def _link(fd: int, st: os.stat_result, source: Path, folder: Path, name: str) -> Path | None:
    """The hard link made for the checked file, or None where one cannot be made (copy instead)."""
    for target in _candidates(folder, name):
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as err:
            if err.errno in _NO_LINK:
                return None
            raise SpoolError(f"{target}: cannot link {source} there: {err.strerror}") from err
        break
    else:
        raise _all_taken(folder, name)
    try:
        linked = os.lstat(target)
        if (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino):
            raise SpoolError(f"{source}: replaced while being kept; left in the spool")
        os.fchmod(fd, 0o600)  # the same inode: the kept file
        os.fsync(fd)  # the scanner may not have synced its data
    except OSError as err:
        _discard(target)
        if err.errno == errno.EPERM:  # not our file, so not ours to chmod: keep a copy of our own
            return None
        raise SpoolError(f"{target}: cannot keep {source}: {err.strerror}") from err
    except SpoolError:
        _discard(target)
        raise
    return target


def _copy(fd: int, source: Path, folder: Path, name: str, max_bytes: int) -> Path:
    for target in _candidates(folder, name):
        try:
            out = os.open(target, _CREATE_FLAGS, 0o600)
        except FileExistsError:
            continue
        except OSError as err:
            raise SpoolError(f"{target}: cannot create: {err.strerror}") from err
        break
    else:
        raise _all_taken(folder, name)
    try:
        try:
            os.fchmod(out, 0o600)  # the open's mode is cut by the umask
            _copy_bounded(fd, out, source, max_bytes)
            os.fsync(out)
        finally:
            os.close(out)
    except OSError as err:
        _discard(target)
        raise SpoolError(f"{target}: cannot copy {source} there: {err.strerror}") from err
    except BaseException:
        _discard(target)
        raise
    return target


def _copy_bounded(fd: int, out: int, source: Path, max_bytes: int) -> None:
    total = 0
    while chunk := os.read(fd, min(_CHUNK, max_bytes + 1 - total)):
        total += len(chunk)
        if total > max_bytes:
            raise SpoolError(f"{source}: grew past the limit of {max_bytes} bytes while being kept")
        view = memoryview(chunk)
        while view:
            view = view[os.write(out, view):]


def _fsync_folder(folder: Path) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as err:
        raise SpoolError(f"{folder}: cannot sync the image folder: {err.strerror}") from err


def _unlink_source(source: Path, st: os.stat_result) -> None:
    """Remove the kept scan from the spool, unless the name now holds another file (a new scan)."""
    try:
        now = os.lstat(source)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(source)
    except FileNotFoundError:
        pass  # gone already: the kept file is the only copy, which is what was wanted
    except OSError as err:
        raise SpoolError(f"{source}: cannot remove it from the spool: {err.strerror}") from err


def _discard(target: Path) -> None:
    """Remove a kept file that must not stay (best effort: the error being raised matters more)."""
    try:
        os.unlink(target)
    except FileNotFoundError:
        pass
    except OSError as err:
        log.error("cannot remove the unfinished image %s: %s", target, err.strerror)
