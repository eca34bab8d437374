"""Scanner protocol v1 codec: byte vectors, resynchronisation, and properties."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.scanner_protocol import (
    MAX_FRAME,
    Decoder,
    Frame,
    FrameError,
    checksum,
    decode,
    encode,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "scanner-protocol.md"

types = st.from_regex(r"[A-Z][A-Z0-9_]{0,11}", fullmatch=True)
keys = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
# Values include every character class that needs escaping: delimiters, %, controls, non-ASCII.
values = st.text(
    alphabet=st.one_of(st.sampled_from("$*,=%\r\n\x00\x7f é"), st.characters(codec="utf-8")), max_size=8
)
frames = st.builds(
    Frame, types, st.integers(0, 65535), st.dictionaries(keys, values, max_size=4)
)


def feed_all(decoder: Decoder, chunks: list[bytes]) -> list[Frame | FrameError]:
    out: list[Frame | FrameError] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def only_frames(items: list[Frame | FrameError]) -> list[Frame]:
    return [item for item in items if isinstance(item, Frame)]


def test_known_vector() -> None:
    data = encode(Frame("HELLO", 1, {"proto": "1"}))
    assert data == b"$HELLO,1,proto=1*09\r\n"
    assert checksum(b"HELLO,1,proto=1") == 0x09


def test_reserved_characters_are_escaped_and_restored() -> None:
    frame = Frame("FAULT", 7, {"code": "E1", "text": "door, left=open*$ 100% \u00e9\n"})
    data = encode(frame)
    body = data[1 : data.index(b"*")]
    assert body == b"FAULT,7,code=E1,text=door%2C left%3Dopen%2A%24 100%25 %C3%A9%0A"
    assert decode(data) == (len(data), frame)


def test_field_order_is_kept() -> None:
    frame = Frame("OK", 3, {"z": "1", "a": "2", "m": "3"})
    _, decoded = decode(encode(frame))
    assert isinstance(decoded, Frame)
    assert list(decoded.fields) == ["z", "a", "m"]


@settings(max_examples=300)
@given(frames)
def test_round_trip(frame: Frame) -> None:
    data = encode(frame)
    assert len(data) <= MAX_FRAME
    assert data.isascii() and data.endswith(b"\r\n")
    assert decode(data) == (len(data), frame)


@settings(max_examples=50)
@given(st.lists(frames, min_size=1, max_size=3))
def test_split_at_every_position_decodes_the_same(batch: list[Frame]) -> None:
    data = b"".join(encode(f) for f in batch)
    for cut in range(len(data) + 1):
        decoder = Decoder()
        assert feed_all(decoder, [data[:cut], data[cut:]]) == batch
        assert decoder.errors == {}


def test_byte_at_a_time() -> None:
    batch = [Frame("SCAN_STARTED", 1, {"scan": "S1"}), Frame("OK", 2)]
    data = b"".join(encode(f) for f in batch)
    assert feed_all(Decoder(), [bytes([b]) for b in data]) == batch


def test_garbage_before_inside_and_after_frames() -> None:
    good = [Frame("SCAN_STARTED", 1, {"scan": "S1"}), Frame("SCAN_DONE", 2, {"scan": "S1"})]
    first, second = (encode(f) for f in good)
    stream = (
        b"\x00\xffnoise"  # before: garbage
        + first
        + first[:9] + b"\x13junk"  # inside: a frame cut short and corrupted...
        + second  # ...resynchronised on the next "$"
        + b"trailing noise"  # after: garbage
    )
    decoder = Decoder()
    out = decoder.feed(stream)
    assert only_frames(out) == good
    assert decoder.errors == {"garbage": 2, "syntax": 1}
    assert [type(x).__name__ for x in out] == [
        "FrameError", "Frame", "FrameError", "Frame", "FrameError"
    ]


def test_garbage_run_split_across_reads_counts_once() -> None:
    decoder = Decoder()
    out = feed_all(decoder, [b"abc", b"def", b"ghi" + encode(Frame("OK", 1))])
    assert only_frames(out) == [Frame("OK", 1)]
    assert decoder.errors == {"garbage": 1}


def test_blank_lines_between_frames_are_not_errors() -> None:
    decoder = Decoder()
    out = decoder.feed(b"\r\n\n" + encode(Frame("OK", 1)) + b"\r\n")
    assert out == [Frame("OK", 1)]
    assert decoder.errors == {}


def test_corrupted_checksum() -> None:
    data = bytearray(encode(Frame("INTERLOCK", 4, {"state": "open"})))
    data[-3] = ord("0") if data[-3] != ord("0") else ord("1")
    consumed, item = decode(bytes(data))
    assert consumed == len(data)
    assert isinstance(item, FrameError) and item.kind == "checksum"


def test_corrupted_body_is_a_checksum_error() -> None:
    data = bytearray(encode(Frame("INTERLOCK", 4, {"state": "open"})))
    data[5] ^= 0x01
    decoder = Decoder()
    out = decoder.feed(bytes(data) + encode(Frame("OK", 5)))
    assert isinstance(out[0], FrameError) and out[0].kind == "checksum"
    assert out[1] == Frame("OK", 5)


def test_lower_case_checksum_and_bare_lf_accepted() -> None:
    assert decode(b"$OK,5*1d\n") == (9, Frame("OK", 5))  # checksum(b"OK,5") == 0x1D


@pytest.mark.parametrize(
    "line",
    [
        b"$OK,5\r\n",  # no checksum trailer
        b"$ok,5*%02X\r\n",  # lower-case type
        b"$OK*%02X\r\n",  # no seq
        b"$OK,65536*%02X\r\n",  # seq out of range
        b"$OK,1,k*%02X\r\n",  # field without "="
        b"$OK,1,k=1,k=2*%02X\r\n",  # repeated key
        b"$OK,1,k=%%zz*%02X\r\n",  # bad escape
        b"$OK,1,k=%%FF*%02X\r\n",  # escape decodes to invalid UTF-8
    ],
)
def test_syntax_errors(line: bytes) -> None:
    if b"%02X" in line:
        body = line[1 : line.rindex(b"*")].replace(b"%%", b"%")
        line = b"$" + body + b"*%02X\r\n" % checksum(body)
    consumed, item = decode(line)
    assert consumed == len(line)
    assert isinstance(item, FrameError) and item.kind == "syntax", item


def test_too_long_line_is_dropped_and_next_frame_recovered() -> None:
    decoder = Decoder()
    out = feed_all(decoder, [b"$OK,1,x=" + b"a" * 600, b"b" * 100 + b"\r\n", encode(Frame("OK", 2))])
    assert only_frames(out) == [Frame("OK", 2)]
    assert decoder.errors == {"too_long": 1}


def test_encode_refuses_a_frame_over_512_bytes() -> None:
    with pytest.raises(FrameError) as info:
        encode(Frame("FAULT", 1, {"text": "x" * 600}))
    assert info.value.kind == "too_long"


def test_frame_rejects_invalid_parts() -> None:
    with pytest.raises(ValueError):
        Frame("hello", 1)
    with pytest.raises(ValueError):
        Frame("OK", 70000)
    with pytest.raises(ValueError):
        Frame("OK", 1, {"Bad": "1"})
    with pytest.raises(ValueError):
        Frame("OK", 1, {"text": "\ud800"})  # a lone surrogate has no UTF-8 form


def test_frame_is_immutable() -> None:
    source = {"a": "1"}
    frame = Frame("OK", 1, source)
    source["a"] = "2"
    assert frame.fields["a"] == "1"
    with pytest.raises(TypeError):
        frame.fields["a"] = "3"  # type: ignore[index]
    assert hash(frame) == hash(Frame("OK", 1, {"a": "1"}))


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.lists(st.integers(1, 64), min_size=1, max_size=50))
def test_arbitrary_bytes_in_arbitrary_chunks_never_raise(data: bytes, sizes: list[int]) -> None:
    decoder = Decoder()
    chunks, pos = [], 0
    for size in sizes * (len(data) // max(1, sum(sizes)) + 1):
        chunks.append(data[pos : pos + size])
        pos += size
    chunks.append(data[pos:])
    out = feed_all(decoder, chunks)
    assert all(isinstance(x, (Frame, FrameError)) for x in out)
    assert sum(decoder.errors.values()) == sum(isinstance(x, FrameError) for x in out)


@settings(max_examples=100)
@given(st.lists(st.tuples(st.binary(max_size=20), frames), max_size=5), st.integers(1, 16))
def test_frames_survive_any_noise_between_them(
    batch: list[tuple[bytes, Frame]], chunk: int
) -> None:
    data = b"".join(noise + encode(frame) for noise, frame in batch)
    out = feed_all(Decoder(), [data[i : i + chunk] for i in range(0, len(data), chunk)])
    assert only_frames(out) == [frame for _, frame in batch]


def test_worked_example_in_the_spec_decodes() -> None:
    lines = re.findall(r"(?:host|dev) +→ (\$.*?\\r\\n)", DOC.read_text())
    assert len(lines) >= 8
    decoder = Decoder()
    out = decoder.feed("".join(lines).replace("\\r\\n", "\r\n").encode())
    assert len(only_frames(out)) == len(lines)
    assert decoder.errors == {}
