"""What every fuzz module shares: the budget, the tally of examples per input, and mutations.

Each module fuzzes one input a stranger controls, through the entry point the station really passes
those bytes to, and names it in `INPUT`. `fuzzes(INPUT)` goes under `@given`: it counts each example,
counts an example that fails (an exception the contract does not allow, or a broken assertion) as a
crash, and turns an example that runs past `HANG_S` into a failure instead of a stuck run. The session's
summary prints the counts (tests/fuzz/conftest.py).
"""

from __future__ import annotations

import functools
import os
import signal
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

F = TypeVar("F", bound=Callable[..., Any])

# FUZZ_SCALE=10 runs ten times the examples (a longer campaign); the default keeps tests/fuzz near a minute
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
HANG_S = 20.0  # one example this slow is a hang: far above any deadline below

EXAMPLES: Counter[str] = Counter()
CRASHES: Counter[str] = Counter()


class Hang(AssertionError):
    """An example ran past HANG_S."""


def budget(examples: int, deadline_ms: int = 2_000) -> settings:
    """The settings of one property: a fixed number of examples and a deadline per example, over the
    `fuzz` profile (tests/fuzz/conftest.py). The deadline is far above what an example takes on a
    loaded two-core box: it catches the input that makes the parser slow, not a busy machine."""
    return settings(settings.get_profile("fuzz"), max_examples=max(1, round(examples * SCALE)),
                    deadline=deadline_ms)


def fuzzes(name: str) -> Callable[[F], F]:
    """Count the examples of `name` run through the decorated test, and the ones that failed."""
    def wrap(test: F) -> F:
        @functools.wraps(test)
        def counted(*args: Any, **kwargs: Any) -> Any:
            EXAMPLES[name] += 1
            previous = signal.signal(signal.SIGALRM, _hang)
            signal.setitimer(signal.ITIMER_REAL, HANG_S)
            try:
                return test(*args, **kwargs)
            except HypothesisException:
                raise  # assume(), and hypothesis's own flow: not the input's fault
            except Exception:
                CRASHES[name] += 1
                raise
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        return counted  # type: ignore[return-value]
    return wrap


def _hang(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"one example ran for more than {HANG_S:g} s")


# ---- nearly valid inputs ------------------------------------------------------------------------------

# Bytes that mean something to one of the parsers: delimiters, line ends, quotes, escapes, NUL, UTF-8 lead
# and continuation bytes, a BOM's first byte.
SPECIAL = b"$*,=%\r\n\t \"'\\{}[]:#.0-9eE+\x00\x7f\x80\xbf\xc0\xc3\xef\xfe\xff"


@st.composite
def mutated(draw: st.DrawFn, valid: bytes | st.SearchStrategy[bytes], most: int = 4) -> bytes:
    """`valid` with one to `most` mutations: a byte flipped, inserted, deleted, duplicated or replaced by
    one that means something to a parser, a stretch repeated, or the end cut off."""
    data = bytearray(valid if isinstance(valid, bytes) else draw(valid))
    for _ in range(draw(st.integers(1, most))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "special", "repeat", "truncate"]))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 4))]
        elif op == "special" and at < len(data):
            data[at] = draw(st.sampled_from(SPECIAL))
        elif op == "repeat":
            end = draw(st.integers(at, min(len(data), at + 16)))
            data[at:at] = data[at:end] * draw(st.integers(1, 3))
        elif op == "truncate":
            del data[at:]
    return bytes(data)


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` cut into pieces of the given sizes, cycled (as a serial port delivers it)."""
    chunks, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        chunks.append(data[pos:pos + size])
        pos, i = pos + size, i + 1
    return chunks


chunk_sizes = st.lists(st.integers(1, 64), min_size=1, max_size=12)
