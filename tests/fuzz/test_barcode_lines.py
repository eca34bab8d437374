"""Barcode lines: the bytes the reader's serial line delivers, through `BarcodeReader.feed` (its read loop
feeds it each read), and the codes they give through the S10 check the lane core applies
(`station.ead.s10.s10_check`).

The contract (drivers/barcode.py): CR, LF and CR LF end a line; a line is stripped of blanks; an empty line
is nothing; a line over MAX_LINE bytes or with bytes outside printable ASCII is an error and no read;
`NOREAD` is a no-read; however the stream is cut, the same reads and errors come out. S10 (station/ead/s10.py):
a made id checks, and the check agrees with the standard's rule computed here on its own.
"""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from drivers.barcode import MAX_LINE, NOREAD, BarcodeRead, BarcodeReader
from station.ead.codes import countries, service_indicators
from station.ead.s10 import make_s10, s10_check
from tests.fuzz.harness import budget, chunk_sizes, chunked, fuzzes, mutated
from tests.station.ead.test_s10 import country_codes, serials, services

INPUT = "barcode lines"

ENDS = (b"\r\n", b"\r", b"\n")
codes = st.one_of(services.flatmap(lambda s: st.builds(make_s10, st.just(s), serials, country_codes)),
                  st.just(NOREAD), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                                           max_size=40))


def expected(stream: bytes) -> tuple[list[str | None], dict[str, int]]:
    """What the reader must make of a whole stream, by the rule in its docstring (the last line is
    complete only if the stream ends in a line end)."""
    *lines, _ = re.split(rb"\r\n|\r|\n", stream)
    reads: list[str | None] = []
    errors: dict[str, int] = {}
    for raw in lines:
        text = raw.strip(b" \t")
        if len(raw) > MAX_LINE:
            errors["too_long"] = errors.get("too_long", 0) + 1
        elif not text:
            continue
        elif any(b < 0x20 or b > 0x7E for b in text):
            errors["garbage"] = errors.get("garbage", 0) + 1
        else:
            reads.append(None if text == NOREAD.encode() else text.decode())
    return reads, errors


def read_all(chunks: list[bytes]) -> tuple[list[BarcodeRead], BarcodeReader]:
    reader = BarcodeReader("/dev/null-fuzz")  # never opened: feed() is the codec
    return [read for i, chunk in enumerate(chunks) for read in reader.feed(chunk, float(i))], reader


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Lines of codes with any line ends, blanks around them, blank lines, and some mutated."""
    parts = []
    for code in draw(st.lists(codes, max_size=8)):
        pad = draw(st.sampled_from([b"", b" ", b"\t", b"  "]))
        parts.append(pad + code.encode() + pad + draw(st.sampled_from(ENDS)))
    stream = b"".join(parts)
    return draw(st.one_of(st.just(stream), mutated(stream), st.binary(max_size=600)))


@budget(400)
@given(streams(), chunk_sizes)
@example(b" " * 129 + b"RR473124829GB\r\n", [130])  # finding 1: padded past MAX_LINE, read only when not cut
@example(b" " * 129 + b"RR473124829GB\r\n", [1000])
@example(b"A" * 129 + b"\n", [64])
@example(b"RR473124829GB\r", [14])
@fuzzes(INPUT)
def test_lines_give_the_same_reads_and_errors_however_they_are_cut(stream: bytes, sizes: list[int]) -> None:
    reads, reader = read_all(chunked(stream, sizes))
    want_reads, want_errors = expected(stream)
    assert [r.code for r in reads] == want_reads
    if len(stream.split(b"\n")[-1].split(b"\r")[-1]) <= MAX_LINE:  # no over-long line left unterminated
        assert reader.stats.errors == want_errors
    assert reader.stats.reads + reader.stats.no_reads == len(reads)
    for read in reads:
        if read.code is not None:
            assert read.code and read.code.isascii() and read.code.isprintable() and len(read.code) <= MAX_LINE
            assert read.code == read.code.strip(" \t")
            problem = s10_check(read.code)  # what the lane core does with a code: an answer, never a crash
            assert problem is None or repr(read.code) in problem.message


# ---- S10 -----------------------------------------------------------------------------------------------

WEIGHTS = (8, 6, 4, 2, 3, 5, 9, 7)


def standard_check_digit(serial: str) -> int:
    """UPU S10 (section 5.3), written out again: 11 minus the weighted sum modulo 11; 10 -> 0, 11 -> 5."""
    c = 11 - sum(int(d) * w for d, w in zip(serial, WEIGHTS, strict=True)) % 11
    return 0 if c == 10 else 5 if c == 11 else c


def standard_valid(code: str) -> bool:
    if len(code) != 13 or not code.isascii():
        return False
    service, serial, check, country = code[:2], code[2:10], code[10], code[11:]
    return (service.isalpha() and service.isupper() and serial.isdigit() and check.isdigit()
            and country.isalpha() and country.isupper() and standard_check_digit(serial) == int(check)
            and service_indicators().get(service[0]) != "reserved" and country in countries())


near_s10 = st.builds(make_s10, services, serials, country_codes).flatmap(
    lambda good: st.one_of(st.just(good), mutated(good.encode(), most=2).map(lambda b: b.decode("latin-1")),
                           st.builds(lambda i, c: good[:i] + c + good[i + 1:], st.integers(0, 12),
                                     st.characters(codec="utf-8"))))


@budget(400)
@given(near_s10 | st.text(max_size=16))
@example("RR473124829GB")
@example("RR473124829G\u0042")  # the same id: no special case for an escape
@example("RR٤٧٣١٢٤٨٢٩GB")  # Arabic-Indic digits are digits to Python, not to S10
@fuzzes(INPUT)
def test_the_s10_check_agrees_with_the_standard(code: str) -> None:
    problem = s10_check(code)
    assert (problem is None) == standard_valid(code)
    if problem is not None:
        assert repr(code) in problem.message


@budget(200)
@given(services, serials, country_codes)
@fuzzes(INPUT)
def test_a_made_id_checks_and_any_other_check_digit_is_refused(service: str, serial: int, country: str) -> None:
    good = make_s10(service, serial, country)
    assert s10_check(good) is None and good[10] == str(standard_check_digit(good[2:10]))
    for digit in "0123456789":
        if digit != good[10]:
            problem = s10_check(good[:10] + digit + good[11:])
            assert problem is not None and problem.fault == "check_digit"
