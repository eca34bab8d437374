"""The console's render worker: a process of its own (console/images.py starts it at the first image).

This module is what the worker imports first, so it is light: the worker lowers its own priority
before it imports numpy and OpenCV, and never competes with the lane for the CPU, not even while it
starts.
"""

from __future__ import annotations

import os
import select
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from station.kernel.imaging import LoadedImage

WORKER_NICE = 10  # the lane's own processes and threads come first
_LOADED: OrderedDict[tuple[str, int, int], LoadedImage] = OrderedDict()


def start(daemon_pid: int) -> None:
    """The worker's first act: lower its priority, and end with the daemon (however the daemon ends: a
    kill -9 gives multiprocessing no chance to stop it, and it would wait on its queue for ever)."""
    os.nice(WORKER_NICE)
    try:
        daemon = os.pidfd_open(daemon_pid)
    except ProcessLookupError:
        os._exit(0)
    threading.Thread(target=_end_with, args=(daemon,), name="render-worker-watch", daemon=True).start()
    import cv2

    cv2.setNumThreads(1)  # one core at most: the other is the lane's


def _end_with(daemon: int) -> None:
    select.select([daemon], [], [])  # a process's pidfd is readable once it has ended
    os._exit(0)


def _load(path: str, stamp: tuple[int, int]) -> LoadedImage:
    from station.kernel.imaging import load_image

    key = (path, *stamp)
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    image = _LOADED[key] = load_image(path)
    while len(_LOADED) > 4:  # an operator steps through one item's tools: keep it decoded
        _LOADED.popitem(last=False)
    return image


def render(path: str, stamp: tuple[int, int], query: str, fmt: str, max_side: int) -> bytes:
    from station.kernel.viewer import View, encode, render_view

    image = _load(path, stamp)
    view = View.parse(dict(parse_qsl(query))).usable_on(image.kind)
    return encode(render_view(image, view, max_side=max_side), fmt)


def describe(path: str, stamp: tuple[int, int]) -> tuple[str, int, int]:
    image = _load(path, stamp)
    return image.kind, int(image.plane.shape[1]), int(image.plane.shape[0])
