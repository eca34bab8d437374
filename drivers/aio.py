"""asyncio helpers that work around Python 3.11's lost cancellations."""

from __future__ import annotations

import asyncio


def reraise_lost_cancel() -> None:
    """Raise CancelledError if this task was cancelled but a library swallowed it.

    Python 3.11's `asyncio.wait_for` returns the result and drops a cancellation that arrives as the
    awaited future completes (fixed in 3.12). pymodbus and aiomqtt await replies that way, so a task
    cancelled at that moment would carry on forever. Call this after awaiting such a library.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
