"""Scanner frames: the bytes the scanner's serial line delivers, through `Decoder.feed` (drivers/scanner.py
feeds it whatever each read returned), and the events the frames carry, through `parse_event`.

The contract (drivers/scanner_protocol.py): `feed` never raises; good frames that arrive intact come out in
order, exactly once, however the stream is cut; every rejected stretch is one FrameError, counted in
`errors`; the decoder resynchronises on the next `$`. An event frame gives its event, None, or ValueError
(drivers/scanner_events.py), and a finished scan's file stays inside the spool folder.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath

from hypothesis import example, given
from hypothesis import strategies as st

from drivers.scanner_events import ScanDone, TubeStatus, parse_event
from drivers.scanner_protocol import MAX_FRAME, Decoder, Frame, FrameError, encode
from tests.drivers.test_scanner_protocol import frames
from tests.fuzz.harness import budget, chunk_sizes, chunked, fuzzes, mutated

INPUT = "scanner frames"


def feed(chunks: list[bytes]) -> tuple[Decoder, list[Frame], list[FrameError]]:
    decoder = Decoder()
    out = [item for chunk in chunks for item in decoder.feed(chunk)]
    assert all(isinstance(item, Frame | FrameError) for item in out)
    got = [item for item in out if isinstance(item, Frame)]
    errors = [item for item in out if isinstance(item, FrameError)]
    assert decoder.frames_ok == len(got)
    assert sum(decoder.errors.values()) == len(errors)
    for error in errors:
        assert error.kind in ("checksum", "syntax", "too_long", "garbage") and str(error).startswith(error.kind)
        assert len(error.raw) <= 64
    return decoder, got, errors


def kinds(errors: list[FrameError]) -> list[str]:
    return [e.kind for e in errors]


def is_subsequence(part: list[Frame], whole: list[Frame]) -> bool:
    rest = iter(whole)
    return all(any(frame == other for other in rest) for frame in part)


encoded = st.lists(frames, max_size=6).map(lambda batch: [(f, encode(f)) for f in batch])
noise = st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\r\n", b"$", b"$$", b"*", b"\n\n", b"$OK,1*",
                                                           b"\xff" * 600, b"$" + b"x" * 600]))


@budget(200)
@given(st.binary(max_size=3000) | mutated(st.lists(frames, max_size=4).map(
    lambda batch: b"".join(encode(f) for f in batch)), most=8), chunk_sizes)
@example(b"$" + b"A" * 1000 + b"\r\n$OK,1*1C\r\n", [7])
@fuzzes(INPUT)
def test_any_bytes_cut_anyhow_decode_the_same_as_whole_and_never_raise(data: bytes, sizes: list[int]) -> None:
    _, whole, whole_errors = feed([data])
    _, pieces, piece_errors = feed(chunked(data, sizes))
    assert pieces == whole
    assert kinds(piece_errors) == kinds(whole_errors)
    for frame in whole:  # whatever came out is a frame the encoder can write: no half-parsed value
        assert len(encode(frame)) <= MAX_FRAME + 1  # +1: a received frame may end in a bare LF


@budget(200)
@given(st.lists(st.tuples(noise, frames), max_size=6), noise, chunk_sizes)
@fuzzes(INPUT)
def test_frames_between_any_noise_come_out_exactly_and_the_noise_is_counted(
        batch: list[tuple[bytes, Frame]], tail: bytes, sizes: list[int]) -> None:
    stream = b"".join(junk + encode(frame) for junk, frame in batch) + tail
    decoder, got, errors = feed(chunked(stream, sizes))
    assert got == [frame for _, frame in batch]
    # each stretch of noise that is not idle line is at least one error; idle line between frames is none
    dirty = [junk for junk, _ in batch if junk.strip(b"\r\n")]
    assert len(errors) >= len(dirty)
    if not dirty and not tail.strip(b"\r\n"):
        assert errors == [] and decoder.errors == {}


@st.composite
def one_flip(draw: st.DrawFn) -> tuple[list[Frame], bytes, int]:
    """A valid stream with one byte changed (never into a `$`, which starts a frame of its own)."""
    batch = draw(st.lists(frames, min_size=1, max_size=4))
    data = bytearray(b"".join(encode(f) for f in batch))
    at = draw(st.integers(0, len(data) - 1))
    new = draw(st.integers(0, 255).filter(lambda b: b not in (data[at], 0x24)))
    data[at] = new
    return batch, bytes(data), at


@budget(200)
@given(one_flip(), chunk_sizes)
@fuzzes(INPUT)
def test_one_corrupted_byte_loses_at_most_its_own_frame_and_never_changes_one(
        case: tuple[list[Frame], bytes, int], sizes: list[int]) -> None:
    batch, data, at = case
    _, got, _ = feed(chunked(data, sizes))
    spans, pos = [], 0
    for frame in batch:
        size = len(encode(frame))
        spans.append((pos, pos + size))
        pos += size
    hit = next(i for i, (start, end) in enumerate(spans) if start <= at < end)
    untouched = [frame for i, frame in enumerate(batch) if i != hit]
    # A checksum catches any one changed byte; a CR turned LF (or a hex digit's case changed) is the same frame.
    assert got in (untouched, batch)
    assert is_subsequence(untouched, got)


# ---- the events the frames carry (drivers/scanner_events.py, what Scanner.events yields) -------------------

field_values = st.one_of(st.text(max_size=20), st.sampled_from([
    "", "S1", "scans/S1.xde", "../S1.xde", "/etc/passwd", "a/../../b", "a\\b", "a\x00b", ".", "a" * 64, "A" * 64,
    "open", "closed", "ready", "warming", "off", "160", "1e400", "nan", "-inf", "1_000", "١٢", " 5 "]))
event_frames = st.builds(Frame, st.sampled_from(["SCAN_STARTED", "SCAN_DONE", "INTERLOCK", "FAULT", "TUBE", "OK"]),
                         st.integers(0, 65535), st.dictionaries(st.sampled_from(["scan", "file", "sha256", "state",
                                                                                  "code", "text", "kv", "ma", "x"]),
                                                                field_values, max_size=5))


@budget(300)
@given(event_frames)
@fuzzes(INPUT)
def test_an_event_frame_gives_its_event_or_a_value_error_and_a_scan_stays_in_the_spool(frame: Frame) -> None:
    # the frame went over the wire first: what comes out of the decoder is what parse_event sees
    try:
        data = encode(frame)
    except FrameError:
        return  # longer than a frame may be: no scanner can send it
    _, got, _ = feed([data])
    assert got == [frame]
    try:
        event = parse_event(frame, 1.0)
    except ValueError as err:
        assert str(err)
        return
    if isinstance(event, ScanDone):
        path = PurePosixPath(event.file)
        assert event.file and not path.is_absolute() and ".." not in path.parts and "\x00" not in event.file
        assert len(event.sha256) == 64 and event.sha256 == event.sha256.lower()
    elif isinstance(event, TubeStatus):
        assert all(v is None or math.isfinite(v) for v in (event.kv, event.ma))
