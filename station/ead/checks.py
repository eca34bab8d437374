"""Quality checks of an EAD record: pure functions returning `Reason(code, detail, field)`.

Every reason names the field it concerns (`contents[1].hs_code`) and says in a sentence what is wrong.
The rules, and the bounds they use:

- S10_INVALID (item_id): station.ead.s10 (format, check digit, reserved service indicator, country).
- EAD_INCOMPLETE: a field customs needs is empty (names, addresses and countries of both parties, category,
  contents, each line's description, quantity, net weight and value, totals, currency, declared time; the
  origin country of each line of goods), or holds a code that is not in the ISO 3166 / ISO 4217 tables. An
  unknown code is reported as EAD_INCOMPLETE because customs can use it no more than an empty one; the
  sentence says which it is.
- VAGUE_DESCRIPTION: every word of a description is a term of data/vague_descriptions.txt or a filler word.
- HS_CODE_MISSING: a line without an HS code in a `sale_of_goods` or `commercial_sample` item (the CN 23
  asks for the tariff number of commercial items; EU ICS2 requires it for goods sent by businesses).
- HS_CODE_INVALID: not 6 to 10 digits once dots and spaces are removed, or a chapter outside 01-97 or 77
  (reserved in the Harmonized System).
- VALUE_IMPLAUSIBLE: a line of anything but documents declared at 0; or, for lines of 0.1 kg or more in a
  currency with a known rate, under 0.50 EUR or over 100,000 EUR per kg (under-valuation, or a slipped
  decimal point; jewellery lighter than 0.1 kg is never judged).
- TOTALS_INCONSISTENT: the line values do not add up to the total (beyond one minor unit per line), the
  net weights exceed the gross weight (beyond 1 g), or a line is in another currency than the total.
- CATEGORY_INCONSISTENT: "documents" with a line outside HS chapter 49 (printed matter) or worth more than
  50 EUR in all; "gift" from a sender named as a business (gifts go between private persons: UPU CN 23
  instructions, EU Regulation 1186/2009 art. 25). Nothing in the form alone contradicts "returned goods".
- WEIGHT_MISMATCH and CONTENT_MISMATCH compare the record with the scale and the detector.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

from station.domain import Reason
from station.ead.codes import (
    countries,
    currencies,
    data_lines,
    eur_rates,
    threat_accounts,
)
from station.ead.record import ContentPiece, EadRecord, Party
from station.ead.s10 import s10_problem

GOODS_CATEGORIES = frozenset({"sale_of_goods", "commercial_sample"})  # HS code and origin required
MIN_EUR_PER_KG, MAX_EUR_PER_KG, MIN_KG_FOR_VALUE_BOUNDS = 0.5, 100_000.0, 0.1
DOCUMENTS_MAX_EUR = 50.0
WEIGHT_SLACK_KG = 0.001
# Words that add nothing to a description: "some used parts" is as vague as "parts".
FILLER_WORDS = frozenset({"a", "an", "and", "of", "for", "the", "with", "some", "assorted", "mixed", "new", "used",
                          "other", "etc", "general", "old", "small", "large", "box", "bag", "lot"})
BUSINESS_WORDS = frozenset({"ltd", "limited", "gmbh", "inc", "llc", "plc", "corp", "corporation", "company", "co",
                            "sarl", "srl", "bv", "spa", "sas", "pty", "shop", "store", "trading", "wholesale",
                            "warehouse"})
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


@dataclass(frozen=True)
class WeightTolerance:
    """How far the scale may differ from the declared gross weight: `absolute_kg` + `share` of the declared.

    The defaults (50 g + 10 %) cover a belt scale's error (tens of grams), a declaration rounded to 0.1 kg
    and packaging that the sender weighed differently.
    """

    absolute_kg: float = 0.05
    share: float = 0.10

    def allowed(self, declared_kg: float) -> float:
        return self.absolute_kg + self.share * declared_kg


def check_record(record: EadRecord) -> tuple[Reason, ...]:
    """Every data-quality finding on one record, in field order; empty when the record is clean."""
    return (*_item_id(record), *_incomplete(record), *_lines(record), *_totals(record), *_category(record))


def weight_mismatch(record: EadRecord, measured_kg: float,
                    tolerance: WeightTolerance = WeightTolerance()) -> Reason | None:
    """WEIGHT_MISMATCH when the scale and the declared gross weight differ beyond `tolerance`.

    None when they agree, or when no gross weight was declared (that is EAD_INCOMPLETE already).
    """
    declared = record.total_gross_weight_kg
    if declared is None or abs(measured_kg - declared) <= tolerance.allowed(declared):
        return None
    return Reason("WEIGHT_MISMATCH", f"the scale weighed {measured_kg:.3f} kg, the declaration says {declared:.3f} kg "
                                     f"(allowed difference {tolerance.allowed(declared):.3f} kg)",
                  "total_gross_weight_kg")


def content_mismatch(record: EadRecord, detected_labels: Iterable[str]) -> Reason | None:
    """CONTENT_MISMATCH when the detector found an object that no declared line accounts for.

    A line accounts for a class through its HS code (e.g. 9302 pistols for "gun") or a word of its
    description (data/threat_accounts.csv). Classes without a row in that table are not judged.
    """
    table = threat_accounts()
    unexplained = sorted({label for label in detected_labels if label in table
                          and not any(_accounts_for(piece, label) for piece in record.contents)})
    if not unexplained:
        return None
    declared = "; ".join(f"{p.description or '(no description)'} (HS {p.hs_code or '-'})" for p in record.contents)
    return Reason("CONTENT_MISMATCH", f"the scan shows {', '.join(unexplained)}, which the declared contents do not "
                                      f"account for: {declared or 'nothing declared'}", "contents")


# ---- the checks -----------------------------------------------------------------------------------


def _item_id(record: EadRecord) -> Iterator[Reason]:
    if (problem := s10_problem(record.item_id)) is not None:
        yield Reason("S10_INVALID", problem, "item_id")


def _incomplete(record: EadRecord) -> Iterator[Reason]:
    yield from _party(record.sender, "sender")
    yield from _party(record.addressee, "addressee")
    if record.category is None:
        yield _missing("category", "the category of item")
    if not record.contents:
        yield _missing("contents", "the contents")
    goods = record.category in GOODS_CATEGORIES
    for i, piece in enumerate(record.contents):
        at = f"contents[{i}]"
        if not piece.description.strip():
            yield _missing(f"{at}.description", "the description")
        for name, value in (("quantity", piece.quantity), ("net_weight_kg", piece.net_weight_kg),
                            ("value", piece.value)):
            if value is None:
                yield _missing(f"{at}.{name}", f"the {name.replace('_kg', '').replace('_', ' ')}")
        if piece.currency:
            yield from _currency(piece.currency, f"{at}.currency")
        if goods and not piece.origin_country.strip():
            yield _missing(f"{at}.origin_country", "the country of origin of goods")
        elif piece.origin_country.strip():
            yield from _country(piece.origin_country, f"{at}.origin_country")
    for name, total in (("total_gross_weight_kg", record.total_gross_weight_kg), ("total_value", record.total_value),
                        ("declared_at", record.declared_at)):
        if total is None:
            yield _missing(name, f"the {name.replace('_kg', '').replace('_', ' ')}")
    if not record.currency.strip():
        yield _missing("currency", "the currency of the total value")
    else:
        yield from _currency(record.currency, "currency")


def _party(party: Party, at: str) -> Iterator[Reason]:
    for name in ("name", "address"):
        if not getattr(party, name).strip():
            yield _missing(f"{at}.{name}", f"the {at}'s {name}")
    if not party.country.strip():
        yield _missing(f"{at}.country", f"the {at}'s country")
    else:
        yield from _country(party.country, f"{at}.country")


def _missing(field: str, what: str) -> Reason:
    return Reason("EAD_INCOMPLETE", f"{what} is missing", field)


def _country(code: str, field: str) -> Iterator[Reason]:
    if code not in countries():
        yield Reason("EAD_INCOMPLETE", f"{code!r} is not an ISO 3166-1 alpha-2 country code", field)


def _currency(code: str, field: str) -> Iterator[Reason]:
    if code not in currencies():
        yield Reason("EAD_INCOMPLETE", f"{code!r} is not an ISO 4217 currency code", field)
    elif currencies()[code] is None:
        yield Reason("EAD_INCOMPLETE", f"{code} is an ISO 4217 code for a fund, metal or test, not money", field)


def _lines(record: EadRecord) -> Iterator[Reason]:
    for i, piece in enumerate(record.contents):
        at = f"contents[{i}]"
        if piece.description.strip() and is_vague(piece.description):
            yield Reason("VAGUE_DESCRIPTION", f"{piece.description!r} does not say what the goods are",
                         f"{at}.description")
        if piece.hs_code is None or not piece.hs_code.strip():
            if record.category in GOODS_CATEGORIES:
                yield Reason("HS_CODE_MISSING", f"a {record.category.replace('_', ' ')} line needs an HS code",
                             f"{at}.hs_code")
        elif (problem := hs_problem(piece.hs_code)) is not None:
            yield Reason("HS_CODE_INVALID", problem, f"{at}.hs_code")
        yield from _value(record, piece, at)


def _value(record: EadRecord, piece: ContentPiece, at: str) -> Iterator[Reason]:
    if piece.value is None or record.category in (None, "documents"):
        return
    if piece.value == 0:
        yield Reason("VALUE_IMPLAUSIBLE", "goods declared with no value", f"{at}.value")
        return
    rate = eur_rates().get(piece.currency or record.currency)
    kg = piece.net_weight_kg
    if rate is None or kg is None or kg < MIN_KG_FOR_VALUE_BOUNDS:
        return
    per_kg = piece.value * rate / kg
    if not MIN_EUR_PER_KG <= per_kg <= MAX_EUR_PER_KG:
        yield Reason("VALUE_IMPLAUSIBLE", f"{piece.value:g} {piece.currency or record.currency} for {kg:g} kg is about "
                                          f"{per_kg:,.2f} EUR per kg, outside {MIN_EUR_PER_KG:g} to "
                                          f"{MAX_EUR_PER_KG:,.0f}", f"{at}.value")


def _totals(record: EadRecord) -> Iterator[Reason]:
    pieces = record.contents
    mixed = False
    for i, piece in enumerate(pieces):
        if piece.currency and record.currency and piece.currency != record.currency:
            mixed = True
            yield Reason("TOTALS_INCONSISTENT", f"this line is in {piece.currency}, the total in {record.currency}",
                         f"contents[{i}].currency")
    values = [p.value for p in pieces]
    if pieces and not mixed and record.total_value is not None and None not in values:
        unit = currencies().get(record.currency)
        minor = 2 if unit is None else unit
        total = sum(v for v in values if v is not None)
        if abs(total - record.total_value) > len(pieces) * 10.0 ** -minor + 1e-9:
            yield Reason("TOTALS_INCONSISTENT", f"the lines add up to {total:.{minor}f}, the total value says "
                                                f"{record.total_value:.{minor}f}", "total_value")
    net = sum(p.net_weight_kg for p in pieces if p.net_weight_kg is not None)
    if record.total_gross_weight_kg is not None and net > record.total_gross_weight_kg + WEIGHT_SLACK_KG:
        yield Reason("TOTALS_INCONSISTENT", f"the lines' net weights add up to {net:.3f} kg, more than the gross "
                                            f"weight {record.total_gross_weight_kg:.3f} kg", "total_gross_weight_kg")


def _category(record: EadRecord) -> Iterator[Reason]:
    if record.category == "documents":
        for i, piece in enumerate(record.contents):
            if piece.hs_code and hs_problem(piece.hs_code) is None and _hs_digits(piece.hs_code)[:2] != "49":
                yield Reason("CATEGORY_INCONSISTENT", f"declared as documents, but HS {piece.hs_code} is goods "
                                                      "(documents are chapter 49)", f"contents[{i}].hs_code")
        rate = eur_rates().get(record.currency)
        if record.total_value is not None and rate is not None and record.total_value * rate > DOCUMENTS_MAX_EUR:
            yield Reason("CATEGORY_INCONSISTENT", f"declared as documents, but worth {record.total_value:g} "
                                                  f"{record.currency} (documents: at most {DOCUMENTS_MAX_EUR:g} EUR)",
                         "total_value")
    if record.category == "gift" and BUSINESS_WORDS.intersection(_words(record.sender.name)):
        yield Reason("CATEGORY_INCONSISTENT", f"declared as a gift, but the sender {record.sender.name!r} is a "
                                              "business (gifts go between private persons)", "category")


# ---- words and codes ------------------------------------------------------------------------------


def hs_problem(code: str) -> str | None:
    """None for a well-formed HS code (6-10 digits, chapter 01-97 but not 77), else what is wrong."""
    digits = _hs_digits(code)
    if not (digits.isascii() and digits.isdigit() and 6 <= len(digits) <= 10):
        return f"{code!r} is not an HS code of 6 to 10 digits"
    chapter = int(digits[:2])
    if not 1 <= chapter <= 97 or chapter == 77:
        return f"{code!r} is in chapter {digits[:2]}, which the Harmonized System does not have"
    return None


def _hs_digits(code: str) -> str:
    return code.replace(".", "").replace(" ", "")


def is_vague(description: str) -> bool:
    """True when every word of `description` is a vague term or filler ("used spare parts", "gifts")."""
    words = _words(description)
    if not words:
        return False
    covered = [True] + [False] * len(words)  # covered[i]: words[:i] are all vague terms or fillers
    for i in range(len(words)):
        if not covered[i]:
            continue
        if words[i] in FILLER_WORDS or words[i].isdigit():
            covered[i + 1] = True
        for term in _vague_terms():
            if _starts_with(words[i:], term):
                covered[i + len(term)] = True
    return covered[-1]


def _accounts_for(piece: ContentPiece, label: str) -> bool:
    accounts = threat_accounts()[label]
    digits = _hs_digits(piece.hs_code or "")
    if digits and any(digits.startswith(prefix) for prefix in accounts.hs_prefixes):
        return True
    words = _words(piece.description)
    return any(_starts_with(words[i:], tuple(_words(k))) for k in accounts.keywords for i in range(len(words)))


def _starts_with(words: list[str], term: tuple[str, ...]) -> bool:
    """`words` begins with `term`, the last word of which may carry a plural "s"."""
    if not term or len(words) < len(term):
        return False
    *head, last = term
    return list(words[:len(head)]) == head and words[len(head)] in (last, last + "s", last + "es")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@cache
def _vague_terms() -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(_words(line)) for line in data_lines("vague_descriptions.txt"))
