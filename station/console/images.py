"""The scans the console shows: rendered from the stored file in a worker process, cached as encoded bytes.

Rendering is numpy and OpenCV work on whole images: in a thread of the daemon it would hold the GIL in
stretches long enough to stall the loop that polls the PLC. So it runs in one worker process of its own
(console/render_worker.py: forked from a small fork server, niced), which shares nothing with the lane; the
daemon keeps the encoded results in a byte-bounded cache. A scan is read only from the station's own
images folder (the path comes from the store, never from the request), and is rendered again when the
file changes (its size and mtime are part of the cache key).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from starlette.exceptions import HTTPException

from station.console import render_worker
from station.kernel.imaging import ImageError
from station.kernel.viewer import RenderCache, View, ViewError

log = logging.getLogger(__name__)
T = TypeVar("T")

SIZES = {"large": 2048, "small": 480}  # the item view; the lane page's last-item card
MEDIA = {"webp": "image/webp", "png": "image/png"}


@dataclass(frozen=True)
class ScanInfo:
    kind: str  # "dual-energy" | "grey8" | "grey16" | "colour"
    width: int
    height: int


class ImageService:
    def __init__(self, images_dir: Path, *, cache_mb: int = 96) -> None:
        self.images_dir = images_dir.resolve()
        self.cache = RenderCache(cache_mb * 2**20)
        self._pool = self._start()

    @staticmethod
    def _start() -> ProcessPoolExecutor:
        """The worker, from a fork server made now, at the start: the daemon (hundreds of MB with the model
        loaded) never forks again while the lane runs, since a fork of it stalls its loop for 100 ms and more.
        A worker that dies is replaced from the fork server, which is small. The worker ends with the daemon
        (render_worker.start), and the fork server with its last worker."""
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["station.console.render_worker"])
        pool = ProcessPoolExecutor(1, mp_context=context, initializer=render_worker.start, initargs=(os.getpid(),))
        pool.submit(int)  # the fork server and the worker start now, beside the lane's own start
        return pool

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def render(self, stored: str, view: View, fmt: str, size: str) -> tuple[bytes, str]:
        if fmt not in MEDIA:
            raise HTTPException(400, f"fmt {fmt!r}: one of {', '.join(MEDIA)}")
        if size not in SIZES:
            raise HTTPException(400, f"size {size!r}: one of {', '.join(SIZES)}")
        path, stamp = self._checked(stored)
        key = (str(path), *stamp, view.query(), fmt, size)
        data = self.cache.get(key)
        if data is None:
            try:
                data = await self._in_worker(render_worker.render, str(path), stamp, view.query(), fmt, SIZES[size])
            except (ImageError, ViewError) as err:
                raise HTTPException(422, f"the stored scan cannot be shown: {err}") from err
            self.cache.put(key, data)
        return data, MEDIA[fmt]

    async def _in_worker(self, job: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, job, *args)
        except BrokenProcessPool as err:  # the worker died (killed, out of memory): a new one, for the next image
            log.error("console render worker died (%s); starting another", err)
            self._pool = self._start()
            raise HTTPException(503, "the image renderer restarted: ask again") from err

    async def info(self, stored: str | None) -> ScanInfo | None:
        """The scan's kind and size (what the boxes are drawn over), or None when it cannot be read."""
        if stored is None:
            return None
        try:
            path, stamp = self._checked(stored)
            kind, width, height = await self._in_worker(render_worker.describe, str(path), stamp)
        except (HTTPException, ImageError):
            return None
        return ScanInfo(kind, width, height)

    def _checked(self, stored: str) -> tuple[Path, tuple[int, int]]:
        path = Path(stored).resolve()
        if not path.is_relative_to(self.images_dir):
            raise HTTPException(404, "the item's scan is not in the station's images folder")
        try:
            stat = path.stat()
        except OSError as err:
            raise HTTPException(404, f"the item's scan is gone: {err.strerror}") from err
        return path, (stat.st_mtime_ns, stat.st_size)
