"""Seeded CN 23 records for the simulator's central feed: clean ones, or ones with exactly one known defect.

A clean record has plausible contents with HS codes, values that add up in one real currency, real
country codes, net weights under the gross weight, and, for each threat in the parcel, a declared line
that accounts for it (a parcel with a pistol declares "air pistol", HS 9304). A defective record differs
from a clean one in one respect only, named in DEFECTS with the reason code the station must give it.
WEIGHT_MISMATCH needs the scale's weight and CONTENT_MISMATCH the detector's labels: pass the parcel's
true weight as `gross_weight_kg` and its `threats`.

A missing record (EAD_MISSING) or a late one is the feed's timing, not the record's content: the feed
simply does not publish, or publishes after the scan.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

DEFECTS: dict[str, str] = {
    "s10_invalid": "S10_INVALID",  # a wrong check digit
    "incomplete": "EAD_INCOMPLETE",  # a field customs needs left out
    "unknown_code": "EAD_INCOMPLETE",  # a country code that is not ISO 3166 ("UK")
    "vague": "VAGUE_DESCRIPTION",  # "gift", "parts", "various items"
    "hs_missing": "HS_CODE_MISSING",  # a line of sold goods without an HS code
    "hs_invalid": "HS_CODE_INVALID",  # chapter 77 or 98, too short, letters
    "value_zero": "VALUE_IMPLAUSIBLE",  # goods worth nothing
    "undervalued": "VALUE_IMPLAUSIBLE",  # 0.10 EUR a kilogram
    "totals_value": "TOTALS_INCONSISTENT",  # lines do not add up to the total value
    "totals_weight": "TOTALS_INCONSISTENT",  # net weights above the gross weight
    "currency_mix": "TOTALS_INCONSISTENT",  # a line in another currency than the total
    "documents_goods": "CATEGORY_INCONSISTENT",  # "documents" with a line of goods
    "gift_business": "CATEGORY_INCONSISTENT",  # a "gift" from a company
    "wrong_weight": "WEIGHT_MISMATCH",  # declared gross weight far from the scale's
    "content_mismatch": "CONTENT_MISMATCH",  # the threats in the parcel are not declared
}

# description, HS code, kg per unit, EUR per unit, detector classes the line accounts for
GOODS: tuple[tuple[str, str, tuple[float, float], tuple[float, float], tuple[str, ...]], ...] = (
    ("cotton T-shirts", "610910", (0.15, 0.3), (8, 30), ()),
    ("paperback novels", "490199", (0.2, 0.6), (6, 20), ()),
    ("wireless headphones", "851830", (0.15, 0.35), (25, 150), ("battery",)),
    ("leather shoes", "640399", (0.6, 1.2), (40, 150), ()),
    ("ceramic mug", "691200", (0.25, 0.45), (5, 20), ()),
    ("USB cables", "854442", (0.03, 0.1), (3, 12), ()),
    ("children's toy car", "950300", (0.1, 0.6), (8, 40), ()),
    ("phone case", "392690", (0.03, 0.08), (5, 25), ("battery",)),
    ("stainless steel water bottle", "732393", (0.25, 0.4), (10, 35), ()),
    ("wool scarf", "611710", (0.1, 0.25), (15, 60), ()),
    ("wrist watch", "910211", (0.05, 0.15), (30, 300), ("battery",)),
    ("kitchen knife", "821191", (0.1, 0.3), (10, 80), ("knife", "blade")),
)
THREAT_LINES = {  # a declared line that accounts for each detector class
    "gun": ("air pistol", "930400", (0.6, 1.2), (60, 250)),
    "knife": ("hunting knife", "821191", (0.15, 0.4), (20, 120)),
    "blade": ("razor blades", "821220", (0.02, 0.1), (3, 15)),
    "shuriken": ("decorative shuriken", "930700", (0.05, 0.15), (5, 25)),
    "battery": ("lithium-ion power bank", "850760", (0.2, 0.4), (15, 60)),
}
DOCUMENTS = (("signed contract", "491199"), ("printed invoices", "491199"), ("letters", None))
CURRENCIES = {"EUR": 1.0, "USD": 0.9, "GBP": 1.18, "CHF": 1.06, "CNY": 0.125, "JPY": 0.006}  # EUR per unit
COUNTRIES = ("GB", "FR", "DE", "NL", "CN", "US", "JP", "CH", "IT", "ES", "PL", "CA", "KR", "IN", "BR")
PEOPLE = ("A. Martin", "J. Smith", "L. Chen", "M. Rossi", "K. Tanaka", "S. Novak", "P. Dubois", "E. Garcia")
BUSINESSES = ("Shenzhen Bright Trading Co Ltd", "Acme Online Store GmbH", "Global Gadgets LLC", "Nordic Wares Ltd")
VAGUE = ("gift", "parts", "accessories", "goods", "samples", "stuff", "various items", "spare parts", "misc")
BAD_HS = ("7700", "771234", "981234", "001234", "ABC123", "12345", "12345678901")
INCOMPLETE_FIELDS = ("sender.name", "sender.address", "sender.country", "addressee.name", "addressee.address",
                     "addressee.country", "category", "total_gross_weight_kg", "total_value", "currency",
                     "declared_at", "contents[].description", "contents[].quantity", "contents[].net_weight_kg",
                     "contents[].value")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def make_record(rng: np.random.Generator, item_id: str, *, defect: str | None = None,
                gross_weight_kg: float | None = None, threats: tuple[str, ...] | list[str] = (),
                declared_at: datetime | None = None) -> dict[str, Any]:
    """A CN 23 record (as JSON-ready dict) for `item_id`: clean, or with exactly the named `defect`.

    `gross_weight_kg` is the parcel's true weight (the declaration then agrees with the scale, unless the
    defect is `wrong_weight`); `threats` are the detector classes in the parcel. Raises ValueError for an
    unknown defect, `wrong_weight` without a weight, or `content_mismatch` without threats.
    """
    if defect is not None and defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; known: {', '.join(DEFECTS)}")
    if defect == "wrong_weight" and gross_weight_kg is None:
        raise ValueError("wrong_weight needs the parcel's true gross_weight_kg")
    if defect == "content_mismatch" and not threats:
        raise ValueError("content_mismatch needs the threats in the parcel")
    currency = _pick(rng, tuple(CURRENCIES))
    origin = _pick(rng, COUNTRIES)
    category = _category(rng, defect, threats)
    lines = _lines(rng, category, defect, threats, currency, origin)
    record: dict[str, Any] = {
        "item_id": item_id,
        "version": 1,
        "sender": _party(rng, origin, business=defect == "gift_business"),
        "addressee": _party(rng, _pick(rng, tuple(c for c in COUNTRIES if c != origin))),
        "category": category,
        "contents": lines,
        "total_gross_weight_kg": 0.0,
        "total_value": _money(sum(line["value"] for line in lines), currency),
        "currency": currency,
        "declared_at": (declared_at or EPOCH + timedelta(minutes=int(rng.integers(0, 525_600)))).isoformat(),
    }
    record["total_gross_weight_kg"] = _gross(rng, lines, gross_weight_kg, defect)
    if defect is not None:
        _spoil(rng, record, defect)
    return record


def _category(rng: np.random.Generator, defect: str | None, threats: tuple[str, ...] | list[str]) -> str:
    if defect == "documents_goods":
        return "documents"
    if defect == "gift_business":
        return "gift"
    if defect == "hs_missing":
        return _pick(rng, ("sale_of_goods", "commercial_sample"))
    choices = ["sale_of_goods", "sale_of_goods", "gift", "commercial_sample", "returned_goods"]
    if not threats and defect not in ("value_zero", "undervalued", "vague", "hs_invalid", "currency_mix"):
        choices.append("documents")  # documents carry no value and need no HS code: not for those defects
    return _pick(rng, tuple(choices))


def _lines(rng: np.random.Generator, category: str, defect: str | None, threats: tuple[str, ...] | list[str],
           currency: str, origin: str) -> list[dict[str, Any]]:
    if category == "documents":
        lines = [_document(rng, currency, origin)]
        if defect == "documents_goods":
            goods = [g for g in GOODS if not g[1].startswith("49")]
            line = _goods_line(rng, goods[int(rng.integers(0, len(goods)))], currency, origin)
            line["value"] = min(line["value"], _money(40 / CURRENCIES[currency], currency))  # cheap: one defect only
            lines.append(line)
        return lines
    hidden = set(threats) if defect == "content_mismatch" else set()
    candidates = [g for g in GOODS if not hidden.intersection(g[4])]
    lines = [_goods_line(rng, candidates[int(rng.integers(0, len(candidates)))], currency, origin)
             for _ in range(int(rng.integers(1, 4)))]
    if defect != "content_mismatch":
        for threat in dict.fromkeys(threats):
            if threat in THREAT_LINES:
                description, hs, kg, eur = THREAT_LINES[threat]
                lines.append(_goods_line(rng, (description, hs, kg, eur, (threat,)), currency, origin))
    return lines


def _goods_line(rng: np.random.Generator, goods: tuple[str, str, tuple[float, float], tuple[float, float], Any],
                currency: str, origin: str) -> dict[str, Any]:
    description, hs, kg, eur, _ = goods
    quantity = int(rng.integers(1, 4))
    return {"description": description, "quantity": quantity,
            "net_weight_kg": round(float(rng.uniform(*kg)) * quantity, 3),
            "value": _money(float(rng.uniform(*eur)) * quantity / CURRENCIES[currency], currency),
            "currency": currency, "hs_code": hs, "origin_country": origin}


def _document(rng: np.random.Generator, currency: str, origin: str) -> dict[str, Any]:
    description, hs = DOCUMENTS[int(rng.integers(0, len(DOCUMENTS)))]
    line = {"description": description, "quantity": 1, "net_weight_kg": round(float(rng.uniform(0.02, 0.3)), 3),
            "value": 0.0, "currency": currency, "origin_country": origin}
    return line if hs is None else {**line, "hs_code": hs}


def _party(rng: np.random.Generator, country: str, business: bool = False) -> dict[str, str]:
    return {"name": _pick(rng, BUSINESSES if business else PEOPLE),
            "address": f"{int(rng.integers(1, 200))} {_pick(rng, ('High Street', 'Station Road', 'Rue de la Paix'))}",
            "postcode": f"{int(rng.integers(10000, 99999))}", "country": country,
            "contact": f"+{int(rng.integers(10, 99))} {int(rng.integers(10**6, 10**7))}"}


def _gross(rng: np.random.Generator, lines: list[dict[str, Any]], truth: float | None, defect: str | None) -> float:
    """The declared gross weight: the scale's (within its tolerance) or the lines plus packaging."""
    net = sum(line["net_weight_kg"] for line in lines)
    if truth is None:
        return round(net + float(rng.uniform(0.1, 0.4)), 3)
    declared = truth * float(rng.uniform(0.98, 1.02))
    if defect == "wrong_weight":  # far enough off that any tolerance of 50 g + 10 % is exceeded
        declared = truth * float(rng.uniform(0.3, 0.6)) if truth >= 0.5 and rng.random() < 0.5 else \
            truth * float(rng.uniform(1.6, 2.5)) + 0.2
    if net > 0.9 * declared:  # the parcel weighs less than its declared lines: the lines were guessed heavy
        for line in lines:
            line["net_weight_kg"] = round(line["net_weight_kg"] * 0.9 * declared / net, 3)
    return round(declared, 3)


def _spoil(rng: np.random.Generator, record: dict[str, Any], defect: str) -> None:
    """Give a clean record exactly `defect` (wrong_weight and content_mismatch were built in already)."""
    lines, currency = record["contents"], record["currency"]
    i = int(rng.integers(0, len(lines)))
    line = lines[i]
    if defect == "s10_invalid":
        item_id = record["item_id"]
        record["item_id"] = f"{item_id[:10]}{(int(item_id[10]) + int(rng.integers(1, 10))) % 10}{item_id[11:]}"
    elif defect == "incomplete":
        fields = [f for f in INCOMPLETE_FIELDS if record["category"] != "documents" or f != "contents[].value"]
        _drop(record, _pick(rng, tuple(fields)).replace("[]", f"[{i}]"))
    elif defect == "unknown_code":
        where = _pick(rng, ("sender", "addressee", "line"))
        bad = _pick(rng, ("UK", "EN", "XZ", "EU"))
        (line if where == "line" else record[where])["origin_country" if where == "line" else "country"] = bad
    elif defect == "vague":
        line["description"] = _pick(rng, VAGUE)
    elif defect == "hs_missing":
        del line["hs_code"]
    elif defect == "hs_invalid":
        line["hs_code"] = _pick(rng, BAD_HS)
    elif defect in ("value_zero", "undervalued"):
        if defect == "undervalued":  # 0.10 EUR a kg on the heaviest line (0 when every line is under 0.1 kg)
            line = max(lines, key=lambda p: p["net_weight_kg"])
        eur = 0.1 * line["net_weight_kg"] if defect == "undervalued" and line["net_weight_kg"] >= 0.1 else 0.0
        line["value"] = _money(eur / CURRENCIES[currency], currency)
        record["total_value"] = _money(sum(p["value"] for p in lines), currency)
    elif defect == "totals_value":
        record["total_value"] = _money(record["total_value"] * 1.2 + 5 / CURRENCIES[currency], currency)
    elif defect == "totals_weight":  # the lines weigh 20-60 % more than the parcel; their value per kg kept
        scale = record["total_gross_weight_kg"] * float(rng.uniform(1.2, 1.6)) / sum(p["net_weight_kg"] for p in lines)
        for p in lines:
            p["net_weight_kg"], p["value"] = round(p["net_weight_kg"] * scale, 3), _money(p["value"] * scale, currency)
        record["total_value"] = _money(sum(p["value"] for p in lines), currency)
    elif defect == "currency_mix":
        other = _pick(rng, tuple(c for c in CURRENCIES if c != currency))
        line["value"], line["currency"] = _money(line["value"] * CURRENCIES[currency] / CURRENCIES[other], other), other


def _drop(record: dict[str, Any], path: str) -> None:
    """Remove the field at `path` ("sender.name", "contents[1].value") from the record."""
    head, _, name = path.rpartition(".")
    target: Any = record
    for part in filter(None, head.replace("[", ".").replace("]", "").split(".")):
        target = target[int(part)] if part.isdigit() else target[part]
    del target[name]


def _money(amount: float, currency: str) -> float:
    return round(amount, 0 if currency == "JPY" else 2)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(0, len(options)))]
