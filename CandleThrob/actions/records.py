"""Vendor corporate-action records -> ledger rows, or rejections with reasons.

A record that cannot be right is never stored and never crashes a run: it
goes to ``rejected_actions`` with every reason. Tickers are normalised to
Polygon's form. An event keeps the vendor's id; a record without one gets an
id derived from what it says, so re-reading it is idempotent. Two events of
one ticker on one day are both kept when their ids differ.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any, Optional

from CandleThrob.errors import InvalidTickerError
from CandleThrob.universe.tickers import clean_ticker

# Cash in any other currency would need an exchange rate the vendor does not send.
CURRENCY = "USD"


def parse_splits(records: list[Any]) -> tuple[list[dict], list[dict]]:
    return _parse(records, "split", _split)


def parse_dividends(records: list[Any]) -> tuple[list[dict], list[dict]]:
    return _parse(records, "dividend", _dividend)


def _parse(records: list[Any], kind: str, parse: Any) -> tuple[list[dict], list[dict]]:
    rows: dict[str, dict] = {}
    rejected = []
    for record in records:
        if not isinstance(record, dict):
            rejected.append({"kind": kind, "record": record, "reasons": "not_an_object"})
            continue
        row, reasons = parse(record)
        if reasons:
            rejected.append({"kind": kind, "record": record, "reasons": ";".join(reasons),
                             "event_id": record.get("id"), "ticker": record.get("ticker")})
        else:
            rows.setdefault(row["event_id"], row)  # the same event twice in one answer counts once
    return list(rows.values()), rejected


def _split(record: dict) -> tuple[dict, list[str]]:
    reasons: list[str] = []
    ticker = _ticker(record.get("ticker"), reasons)
    day = _date(record.get("execution_date"), "execution_date", reasons, required=True)
    ratio = {}
    for name in ("split_from", "split_to"):
        value = _number(record.get(name))
        if value is None:
            reasons.append(f"missing_{name}")
        elif value <= 0:
            reasons.append(f"non_positive_{name}")
        ratio[name] = value
    row = {"event_id": _event_id(record, ticker, day, ratio.get("split_from"), ratio.get("split_to")),
           "ticker": ticker, "execution_date": day, **ratio,
           "adjustment_type": _text(record.get("adjustment_type"), 32),
           "vendor_factor": _number(record.get("historical_adjustment_factor"))}
    return row, reasons


def _dividend(record: dict) -> tuple[dict, list[str]]:
    reasons: list[str] = []
    ticker = _ticker(record.get("ticker"), reasons)
    day = _date(record.get("ex_dividend_date"), "ex_dividend_date", reasons, required=True)
    cash = _number(record.get("cash_amount"))
    if cash is None:
        reasons.append("missing_cash_amount")
    elif cash <= 0:
        reasons.append("non_positive_cash_amount")
    currency = str(record.get("currency") or CURRENCY).strip().upper()
    if currency != CURRENCY:
        reasons.append(f"currency_{currency[:8]}_without_exchange_rate")
    frequency = _number(record.get("frequency"))
    row = {"event_id": _event_id(record, ticker, day, cash), "ticker": ticker, "ex_dividend_date": day,
           "cash_amount": cash, "currency": currency[:8],
           **{name: _date(record.get(name), name, reasons, required=False)
              for name in ("declaration_date", "record_date", "pay_date")},
           "frequency": int(frequency) if frequency is not None and frequency.is_integer() else None,
           "distribution_type": _text(record.get("distribution_type"), 32),
           "split_adjusted_cash": _number(record.get("split_adjusted_cash_amount")),
           "vendor_factor": _number(record.get("historical_adjustment_factor"))}
    return row, reasons


def _ticker(value: Any, reasons: list[str]) -> Optional[str]:
    if value is None or value == "":
        reasons.append("missing_ticker")
        return None
    try:
        return clean_ticker(value)
    except InvalidTickerError:
        reasons.append("invalid_ticker")
        return None


def _date(value: Any, name: str, reasons: list[str], *, required: bool) -> Optional[dt.date]:
    if value is None or value == "":
        if required:
            reasons.append(f"missing_{name}")
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        if required:
            reasons.append(f"bad_{name}")
        return None  # an optional date that is not one is left out, the event is still right


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any, width: int) -> Optional[str]:
    return None if value is None else str(value)[:width]


def _event_id(record: dict, *parts: Any) -> str:
    given = record.get("id")
    if isinstance(given, (str, int)) and str(given).strip():
        return str(given).strip()[:80]
    return "D" + hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
