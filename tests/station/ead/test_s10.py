"""S10 identifiers: the UPU check digit and the reasons a code is refused."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from station.ead.s10 import check_digit, make_s10, s10_problem


def test_worked_examples() -> None:
    # 4*8+7*6+3*4+1*2+2*3+4*5+8*9+2*7 = 200; 200 mod 11 = 2; 11 - 2 = 9
    assert check_digit("47312482") == 9
    assert s10_problem("RR473124829GB") is None
    assert check_digit("00000000") == 5  # 11 - 0 = 11 -> 5
    assert check_digit("00000008") == 0  # 8*7 = 56, 56 mod 11 = 1, 11 - 1 = 10 -> 0


serials = st.integers(0, 10**8 - 1)
letters = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)


@given(serials, letters, letters)
def test_made_ids_are_valid(serial: int, service: str, country: str) -> None:
    assert s10_problem(make_s10(service, serial, country)) is None


@given(serials, st.integers(1, 9))
def test_any_wrong_check_digit_is_refused_with_the_expected_digit(serial: int, shift: int) -> None:
    good = make_s10("RR", serial, "GB")
    wrong = (int(good[10]) + shift) % 10
    problem = s10_problem(good[:10] + str(wrong) + good[11:])
    assert problem is not None and f"expected {good[10]}" in problem


@given(st.text(max_size=20))
def test_arbitrary_text_never_crashes_and_malformed_is_named(text: str) -> None:
    problem = s10_problem(text)
    assert problem is None or "check digit" in problem or "is not two letters" in problem


def test_format_errors() -> None:
    for code in ["", "RR47312482GB", "rr473124829gb", "RR4731248290GB", "R1473124829GB"]:
        assert "is not two letters" in (s10_problem(code) or "")
