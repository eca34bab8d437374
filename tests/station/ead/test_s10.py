"""S10 identifiers: the UPU check digit and the specific reason a code is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.ead.codes import countries, service_indicators
from station.ead.s10 import check_digit, make_s10, s10_check, s10_problem


def test_worked_examples() -> None:
    # 4*8+7*6+3*4+1*2+2*3+4*5+8*9+2*7 = 200; 200 mod 11 = 2; 11 - 2 = 9
    assert check_digit("47312482") == 9
    assert s10_problem("RR473124829GB") is None
    assert check_digit("00000000") == 5  # 11 - 0 = 11 -> 5
    assert check_digit("00000008") == 0  # 8*7 = 56, 56 mod 11 = 1, 11 - 1 = 10 -> 0


serials = st.integers(0, 10**8 - 1)
usable_letters = st.sampled_from(sorted(k for k, v in service_indicators().items() if v != "reserved"))
services = st.tuples(usable_letters, st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ")).map("".join)
country_codes = st.sampled_from(sorted(countries()))


@given(serials, services, country_codes)
def test_made_ids_with_a_usable_service_and_a_real_country_are_valid(serial: int, service: str, country: str) -> None:
    assert s10_problem(make_s10(service, serial, country)) is None


@given(serials, st.integers(1, 9))
def test_any_wrong_check_digit_is_refused_with_the_expected_digit(serial: int, shift: int) -> None:
    good = make_s10("RR", serial, "GB")
    wrong = (int(good[10]) + shift) % 10
    problem = s10_check(good[:10] + str(wrong) + good[11:])
    assert problem is not None and problem.fault == "check_digit" and f"expected {good[10]}" in problem.message


@pytest.mark.parametrize("service", ["JA", "KX", "SA", "TT", "WZ", "XX", "YB"])
def test_a_reserved_service_indicator_is_refused(service: str) -> None:
    problem = s10_check(make_s10(service, 12345678, "GB"))
    assert problem is not None and problem.fault == "service_indicator" and service in problem.message


@pytest.mark.parametrize("country", ["UK", "EU", "XZ", "EN"])
def test_a_country_outside_iso_3166_is_refused(country: str) -> None:
    problem = s10_check(make_s10("RR", 12345678, country))
    assert problem is not None and problem.fault == "country" and country in problem.message


@given(st.text(max_size=20))
def test_arbitrary_text_never_crashes_and_every_refusal_says_why(text: str) -> None:
    problem = s10_check(text)
    assert problem is None or (problem.fault in ("format", "check_digit", "service_indicator", "country")
                               and repr(text) in problem.message)


def test_format_errors() -> None:
    for code in ["", "RR47312482GB", "rr473124829gb", "RR4731248290GB", "R1473124829GB", "RR473124829GB\n",
                 "RR٤٧٣١٢٤٨٢٩GB"]:
        problem = s10_check(code)
        assert problem is not None and problem.fault == "format" and "is not two letters" in problem.message
