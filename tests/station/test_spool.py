"""Spool files are not trusted: links, FIFOs, devices and oversized files are refused; kept scans are
moved without loss or overwrite, across filesystems too, and are private (0600 in 0700 folders)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from station.spool import SpoolError, keep_image, read_spool_file

LIMIT = 1 << 20


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


@contextlib.contextmanager
def fifo_unblocked_after(fifo: Path, seconds: float) -> Iterator[None]:
    """Should a reader block on ``fifo``, free it after ``seconds`` (the test then fails on time, not
    by hanging): open the write end, which a blocked reader's open is waiting for, and close it."""
    stop = threading.Event()

    def free() -> None:
        if stop.wait(seconds):
            return
        while not stop.is_set():
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: no reader (yet)
                time.sleep(0.05)

    helper = threading.Thread(target=free, name="fifo-unblocker")
    helper.start()
    try:
        yield
    finally:
        stop.set()
        helper.join()


@pytest.fixture
def private_umask() -> Iterator[None]:
    """A permissive umask, so that a mode that comes out 0600/0700 was set, not inherited."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.fixture
def shm_spool(tmp_path: Path) -> Iterator[Path]:
    """A spool folder on tmpfs (/dev/shm), on another filesystem than tmp_path."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this machine: cannot put the spool on another filesystem")
    spool = Path(tempfile.mkdtemp(prefix="spool-", dir="/dev/shm"))
    try:
        if os.stat(spool).st_dev == os.stat(tmp_path).st_dev:
            reason = f"/dev/shm and {tmp_path} are one filesystem here: no cross-filesystem move to test"
            print(reason)
            pytest.skip(reason)
        yield spool
    finally:
        shutil.rmtree(spool, ignore_errors=True)


# ---- read_spool_file ----------------------------------------------------------------------------


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "S1.xde"
    path.write_bytes(b"x" * 3000)
    assert read_spool_file(path, 3000) == b"x" * 3000


def test_a_symlink_to_dev_zero_is_refused_at_once(tmp_path: Path) -> None:
    link = tmp_path / "S1.xde"
    link.symlink_to("/dev/zero")
    with pytest.raises(SpoolError, match=r"S1\.xde: is a symbolic link \(to /dev/zero\)"):
        read_spool_file(link, LIMIT)


def test_a_symlink_is_refused_even_to_a_regular_file(tmp_path: Path) -> None:
    real = tmp_path / "real.xde"
    real.write_bytes(b"scan")
    link = tmp_path / "S1.xde"
    link.symlink_to(real)
    with pytest.raises(SpoolError, match="symbolic link"):
        read_spool_file(link, LIMIT)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "S1.xde"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with fifo_unblocked_after(fifo, 5), pytest.raises(SpoolError, match=r"S1\.xde: is a FIFO"):
        read_spool_file(fifo, LIMIT)
    assert time.monotonic() - t0 < 1


def test_a_directory_and_a_device_are_refused(tmp_path: Path) -> None:
    (tmp_path / "S1.xde").mkdir()
    with pytest.raises(SpoolError, match="is a directory"):
        read_spool_file(tmp_path / "S1.xde", LIMIT)
    device = tmp_path / "S2.xde"
    try:
        os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
    except PermissionError:
        pytest.skip("cannot make a device node here (needs CAP_MKNOD); the directory case ran")
    with pytest.raises(SpoolError, match="is a character device"):
        read_spool_file(device, LIMIT)


def test_a_file_over_the_limit_is_refused_naming_both_sizes(tmp_path: Path) -> None:
    path = tmp_path / "S1.xde"
    path.write_bytes(b"x" * 2001)
    with pytest.raises(SpoolError, match=r"S1\.xde: 2001 bytes, larger than the limit of 2000 bytes"):
        read_spool_file(path, 2000)


def test_a_file_longer_than_its_size_says_is_still_bounded() -> None:
    # /proc files are regular files that say 0 bytes and hold more: like a file growing while read.
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps on this machine")
    with pytest.raises(SpoolError, match="grew past the limit of 64 bytes"):
        read_spool_file(maps, 64)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpoolError, match=r"absent\.xde: no such file"):
        read_spool_file(tmp_path / "absent.xde", LIMIT)


# ---- keep_image ----------------------------------------------------------------------------------


def test_keep_across_filesystems_copies_verbatim_and_privately(shm_spool: Path, tmp_path: Path,
                                                               private_umask: None) -> None:
    data = os.urandom(3 * LIMIT + 17)  # more than one copy chunk
    source = shm_spool / "S1.xde"
    source.write_bytes(data)
    images = tmp_path / "images"
    kept = keep_image(source, images, name="S1-0123456789ab.xde", max_bytes=4 * LIMIT)
    assert kept.parent.parent == images and kept.name == "S1-0123456789ab.xde"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert not source.exists()
    assert mode(kept) == 0o600 and mode(kept.parent) == 0o700 and mode(images) == 0o700


def test_keep_on_one_filesystem_links_the_same_file(tmp_path: Path, private_umask: None) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    source = spool / "S1.xde"
    source.write_bytes(b"scan one")
    source.chmod(0o644)  # as a scanner's export leaves it
    inode = os.stat(source).st_ino
    kept = keep_image(source, tmp_path / "images", name="S1-a.xde", max_bytes=LIMIT)
    assert os.stat(kept).st_ino == inode and os.stat(kept).st_nlink == 1  # linked, not copied
    assert kept.read_bytes() == b"scan one" and not source.exists()
    assert mode(kept) == 0o600 and mode(kept.parent) == 0o700


@pytest.mark.parametrize("where", ["same", "cross"])
def test_a_repeated_name_is_kept_beside_never_over(where: str, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    # After a restart the same day the scanner's ids, and so the names, start over.
    spool = request.getfixturevalue("shm_spool") if where == "cross" else tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    images = tmp_path / "images"
    kept = []
    for content in (b"first run", b"second run", b"third run"):
        (spool / "S1.xde").write_bytes(content)
        kept.append(keep_image(spool / "S1.xde", images, name="S1.xde", max_bytes=LIMIT))
    assert [p.name for p in kept] == ["S1.xde", "S1-1.xde", "S1-2.xde"]
    assert [p.read_bytes() for p in kept] == [b"first run", b"second run", b"third run"]
    assert files_under(spool) == []


def test_a_failure_to_make_the_folder_keeps_the_source(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    source = spool / "S1.xde"
    source.write_bytes(b"scan")
    images = tmp_path / "images"
    images.write_text("not a folder")  # works as root too, unlike a chmod
    with pytest.raises(SpoolError, match="images: exists and is not a folder"):
        keep_image(source, images, name="S1.xde", max_bytes=LIMIT)
    assert source.read_bytes() == b"scan"


def test_a_write_failure_mid_copy_keeps_the_source_and_leaves_no_partial_file(shm_spool: Path, tmp_path: Path) -> None:
    # A real short write (EFBIG under a file-size limit) stands in for a full disk (ENOSPC).
    data = os.urandom(2 * LIMIT)
    source = shm_spool / "S1.xde"
    source.write_bytes(data)
    images = tmp_path / "images"
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT // 2, old_limit[1]))
    try:
        with pytest.raises(SpoolError, match="cannot copy .*S1.xde there: File too large"):
            keep_image(source, images, name="S1.xde", max_bytes=4 * LIMIT)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert source.read_bytes() == data
    assert files_under(images) == []


def test_refused_sources_stay_in_the_spool_and_nothing_is_kept(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    real = tmp_path / "elsewhere.xde"
    real.write_bytes(b"not a scan of ours")
    (spool / "link.xde").symlink_to(real)
    os.mkfifo(spool / "fifo.xde")
    (spool / "big.xde").write_bytes(b"x" * 101)
    (spool / "bad-name.xde").write_bytes(b"scan")
    images = tmp_path / "images"
    cases = [("link.xde", "x.xde", "symbolic link"), ("fifo.xde", "x.xde", "FIFO"),
             ("big.xde", "x.xde", "101 bytes, larger than the limit of 100 bytes"),
             ("bad-name.xde", "../escape.xde", "not a plain file name")]
    with fifo_unblocked_after(spool / "fifo.xde", 5):
        for source, name, problem in cases:
            with pytest.raises(SpoolError, match=problem):
                keep_image(spool / source, images, name=name, max_bytes=100)
    assert sorted(p.name for p in spool.iterdir()) == ["bad-name.xde", "big.xde", "fifo.xde", "link.xde"]
    assert (spool / "link.xde").is_symlink() and real.read_bytes() == b"not a scan of ours"
    assert files_under(images) == [] and not (tmp_path / "escape.xde").exists()
