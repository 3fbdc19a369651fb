"""Contract specifications, date-effective margins and fees, symbols and expiries, as data.

The numbers live in three CSV files shipped as package data (``warehouse/data/``, documented in
``warehouse/data/README.md``); this module validates them, exposes them as typed objects and Arrow tables,
and implements the few rules that cannot be a column: symbol parsing and last-trading-day arithmetic.

Units
-----
* ``tick_size``: price units of the contract's quote (index points, USD/bbl, USD/oz, points of par,
  USD per EUR/JPY).
* ``multiplier``: currency per 1.0 price unit per contract; ``tick_value = tick_size * multiplier``
  (currency per tick per contract).
* Margins: currency per contract. Fees: currency per contract **per side** (a round turn pays twice).
* RTH times: ``America/New_York`` wall clock, ``[open, close)``.
"""

from __future__ import annotations

import bisect
import calendar as _calendar
import csv
import functools
import math
import re
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from importlib import resources
from typing import Any, Literal, NamedTuple, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "first_effective_date",
    "MONTH_CODES",
    "EXPIRY_RULES",
    "ContractSpec",
    "MarginRow",
    "FeeRow",
    "ContractId",
    "load_specs",
    "specs_table",
    "margins_table",
    "fees_table",
    "margin_on",
    "fee_per_side",
    "root_of",
    "parse_contract",
    "contract_symbol",
    "expiry_date",
]

#: CME month codes, January first: ``MONTH_CODES[month - 1]`` is the code of ``month``.
MONTH_CODES = "FGHJKMNQUVXZ"

ExpiryRule = Literal[
    "third_friday",
    "crude_25th_minus_3bd",
    "natgas_3bd_before_month",
    "third_last_bd",
    "last_bd_minus_7bd",
    "last_bd",
    "third_wednesday_minus_2bd",
]

#: The fixed vocabulary of ``expiry_rule`` keys, with the rule each one names ("bd" = CME business day).
EXPIRY_RULES: dict[str, str] = {
    "third_friday": "3rd Friday of the contract month; the preceding business day if that is not one",
    "crude_25th_minus_3bd": (
        "3 business days before the 25th calendar day of the month before the contract month; if the 25th is "
        "not a business day, 3 business days before the last business day preceding the 25th"
    ),
    "natgas_3bd_before_month": "3 business days before the first calendar day of the contract month",
    "third_last_bd": "3rd-last business day of the contract month",
    "last_bd_minus_7bd": "7th business day preceding the last business day of the contract month",
    "last_bd": "last business day of the contract month",
    "third_wednesday_minus_2bd": "2nd business day before the 3rd Wednesday of the contract month",
}

_EXCHANGE_VENUE = {"CME": "XCME", "CBOT": "XCBT", "NYMEX": "XNYM", "COMEX": "XCEC"}
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# What may follow a root in a symbol: nothing, a Databento continuous suffix (.c.0 calendar, .v.0 volume,
# .n.1 open interest), or a month code plus a 1-2 digit year (ESZ3, ESZ13).
_SUFFIX = re.compile(r"^(?:|\.[cvn]\.\d+|(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{1,2}))$")
_TICK_RTOL = 1e-9


# --------------------------------------------------------------------------------------------------
# Row models
# --------------------------------------------------------------------------------------------------


def _hhmm(value: Any) -> Any:
    """Accept only ``HH:MM`` strings (or :class:`datetime.time`) for RTH columns."""
    if isinstance(value, str) and not _HHMM.match(value):
        raise ValueError(f"expected HH:MM (24 h, America/New_York), got {value!r}")
    return value


def _iso_date(value: Any) -> Any:
    """Accept only ``YYYY-MM-DD`` strings (or :class:`datetime.date`) for date columns."""
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError(f"expected YYYY-MM-DD, got {value!r}")
    return value


class ContractSpec(BaseModel):
    """One futures root (product) as listed today by CME Group.

    Attributes
    ----------
    root : str
        Globex product code (``ES``, ``6E``); the prefix of every contract symbol of the product.
    description : str
        Human-readable product name.
    ib_exchange : {"CME", "CBOT", "NYMEX", "COMEX"}
        Interactive Brokers' exchange name for the product.
    databento_dataset : {"GLBX.MDP3"}
        Databento dataset holding the product.
    databento_venue : {"XCME", "XCBT", "XNYM", "XCEC"}
        ISO 10383 MIC of the listing exchange; must agree with ``ib_exchange``.
    currency : str
        ISO 4217 code of prices' value, margins and fees (USD for all current rows).
    tick_size : float
        Minimum outright price increment, in price units.
    tick_value : float
        Value of one tick per contract, in ``currency``; equals ``tick_size * multiplier`` (rel. tol. 1e-9).
    multiplier : float
        Contract value of a 1.0 price move, in ``currency`` per price unit.
    rth_open_et, rth_close_et : datetime.time
        Regular trading hours ``[open, close)``, America/New_York wall clock (project feature catalog).
    correlation_group : {"equity_index", "energy", "metals", "bonds", "currencies"}
        Risk bucket used by the risk manager.
    contract_months : str
        Month codes of every month the exchange lists, in calendar order (``HMUZ``, ``FGHJKMNQUVXZ``).
    expiry_rule : str
        Key of :data:`EXPIRY_RULES`.
    calendar : str
        pandas_market_calendars calendar name for the product's Globex sessions and holidays.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    root: str = Field(pattern=r"^[0-9A-Z]{1,4}$")
    description: str = Field(min_length=1)
    ib_exchange: Literal["CME", "CBOT", "NYMEX", "COMEX"]
    databento_dataset: Literal["GLBX.MDP3"]
    databento_venue: Literal["XCME", "XCBT", "XNYM", "XCEC"]
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    tick_size: float = Field(gt=0, allow_inf_nan=False)
    tick_value: float = Field(gt=0, allow_inf_nan=False)
    multiplier: float = Field(gt=0, allow_inf_nan=False)
    rth_open_et: time
    rth_close_et: time
    correlation_group: Literal["equity_index", "energy", "metals", "bonds", "currencies"]
    contract_months: str = Field(min_length=1, max_length=12)
    expiry_rule: ExpiryRule
    calendar: str = Field(min_length=1)

    _check_hhmm = field_validator("rth_open_et", "rth_close_et", mode="before")(_hhmm)

    @field_validator("contract_months")
    @classmethod
    def _months_in_order(cls, value: str) -> str:
        # Calendar order without repeats makes the column comparable by eye and by string equality.
        positions = [MONTH_CODES.find(c) for c in value]
        if -1 in positions or positions != sorted(set(positions)):
            raise ValueError(f"expected distinct month codes from {MONTH_CODES} in calendar order, got {value!r}")
        return value

    @field_validator("calendar")
    @classmethod
    def _calendar_exists(cls, value: str) -> str:
        if value not in _calendar_names():
            raise ValueError(f"{value!r} is not a pandas_market_calendars calendar name")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> ContractSpec:
        # Errors name their column first ("column: message"); the CSV loader relies on it.
        expected = self.tick_size * self.multiplier
        if not math.isclose(self.tick_value, expected, rel_tol=_TICK_RTOL, abs_tol=0.0):
            raise ValueError(
                f"tick_value: {self.tick_value!r} != tick_size * multiplier = {self.tick_size!r} * "
                f"{self.multiplier!r} = {expected!r}"
            )
        if _EXCHANGE_VENUE[self.ib_exchange] != self.databento_venue:
            raise ValueError(
                f"databento_venue: {self.databento_venue} does not match ib_exchange {self.ib_exchange} "
                f"(expected {_EXCHANGE_VENUE[self.ib_exchange]})"
            )
        if self.rth_open_et >= self.rth_close_et:
            raise ValueError(f"rth_close_et: {self.rth_close_et} is not after rth_open_et {self.rth_open_et}")
        return self

    @property
    def months(self) -> tuple[int, ...]:
        """Listed contract months as integers 1-12."""
        return tuple(MONTH_CODES.index(c) + 1 for c in self.contract_months)


class _DatedRow(BaseModel):
    """Columns shared by the date-effective files: a row is in force from ``effective_date`` on."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    root: str = Field(min_length=1)
    effective_date: date
    currency: str = Field(pattern=r"^[A-Z]{3}$")

    _check_date = field_validator("effective_date", mode="before")(_iso_date)


class MarginRow(_DatedRow):
    """One date-effective margin level, currency per contract (outright, speculator)."""

    initial_margin: float = Field(ge=0, allow_inf_nan=False)
    maintenance_margin: float = Field(ge=0, allow_inf_nan=False)
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _initial_covers_maintenance(self) -> MarginRow:
        if self.initial_margin < self.maintenance_margin:
            raise ValueError(
                f"initial_margin: {self.initial_margin} is below maintenance_margin {self.maintenance_margin}"
            )
        return self


class FeeRow(_DatedRow):
    """One date-effective fee schedule, currency per contract **per side**."""

    ib_commission: float = Field(ge=0, allow_inf_nan=False)
    exchange_fee: float = Field(ge=0, allow_inf_nan=False)
    regulatory_fee: float = Field(ge=0, allow_inf_nan=False)

    @property
    def total_per_side(self) -> float:
        """``ib_commission + exchange_fee + regulatory_fee``, currency per contract per side."""
        return self.ib_commission + self.exchange_fee + self.regulatory_fee


class ContractId(NamedTuple):
    """A single futures contract: root, delivery month (1-12) and 4-digit year."""

    root: str
    month: int
    year: int


# --------------------------------------------------------------------------------------------------
# CSV loading
# --------------------------------------------------------------------------------------------------

_Row = TypeVar("_Row", bound=BaseModel)


@functools.cache
def _calendar_names() -> frozenset[str]:
    import pandas_market_calendars as mcal

    return frozenset(mcal.get_calendar_names())


def _read_rows(filename: str, model: type[_Row]) -> list[tuple[int, _Row]]:
    """Read ``warehouse/data/<filename>`` and validate each row into ``model``.

    Returns ``(line number, row)`` pairs; raises :class:`ValueError` naming the file, the line, the root and
    the column of the first bad value.
    """
    resource = resources.files("warehouse") / "data" / filename
    where = f"warehouse/data/{filename}"
    columns = list(model.model_fields)
    with resource.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        extra = [c for c in header if c not in columns]
        if missing or extra:
            raise ValueError(f"{where}: header must be {columns}; missing {missing}, unexpected {extra}")
        rows: list[tuple[int, _Row]] = []
        for record in reader:
            line = reader.line_num
            label = f"{where}, line {line} (root {record.get('root')!r})"
            if None in record or any(v is None for v in record.values()):
                raise ValueError(f"{label}: expected {len(columns)} fields")
            blank = [k for k, v in record.items() if not v.strip()]
            if blank:
                raise ValueError(f"{label}, column {blank[0]!r}: empty value")
            try:
                rows.append((line, model.model_validate(record)))
            except ValidationError as exc:
                raise ValueError(f"{label}, {_describe(exc)}") from exc
    return rows


def _describe(exc: ValidationError) -> str:
    """``column 'x': message`` for the first error of a pydantic validation failure."""
    error = exc.errors()[0]
    cause = error.get("ctx", {}).get("error")
    message = str(cause) if cause is not None else error["msg"]
    if error["loc"]:
        return f"column {error['loc'][0]!r}: {message} (value {error.get('input')!r})"
    # A model-level check: its message starts with the column it blames.
    column, _, message = message.partition(": ")
    return f"column {column!r}: {message}"


@functools.cache
def _specs() -> tuple[ContractSpec, ...]:
    rows = _read_rows("contracts.csv", ContractSpec)
    seen: dict[str, int] = {}
    for line, spec in rows:
        if spec.root in seen:
            raise ValueError(
                f"warehouse/data/contracts.csv, line {line}, column 'root': duplicate root {spec.root!r} "
                f"(first on line {seen[spec.root]})"
            )
        seen[spec.root] = line
    return tuple(spec for _, spec in rows)


def load_specs() -> dict[str, ContractSpec]:
    """All contract specifications, keyed by root, in file order.

    Returns
    -------
    dict[str, ContractSpec]
        A fresh dict on each call (the validated rows are cached and immutable).

    Raises
    ------
    ValueError
        If ``contracts.csv`` has a bad header or value; the message names the file, line and column.
    """
    return {spec.root: spec for spec in _specs()}


def _spec(root: str) -> ContractSpec:
    for spec in _specs():
        if spec.root == root:
            return spec
    raise KeyError(f"unknown root {root!r}; known roots: {', '.join(s.root for s in _specs())}")


_D = TypeVar("_D", bound=_DatedRow)


def _dated(filename: str, model: type[_D]) -> dict[str, tuple[list[date], list[_D]]]:
    """Rows of a date-effective file grouped by root and sorted by ``effective_date``."""
    specs = {s.root: s for s in _specs()}
    grouped: dict[str, list[tuple[date, _D]]] = {}
    for line, row in _read_rows(filename, model):
        where = f"warehouse/data/{filename}, line {line} (root {row.root!r})"
        if row.root not in specs:
            raise ValueError(f"{where}, column 'root': not in contracts.csv")
        expected = specs[row.root].currency
        if row.currency != expected:
            raise ValueError(f"{where}, column 'currency': {row.currency} != contract currency {expected}")
        if any(day == row.effective_date for day, _ in grouped.get(row.root, [])):
            raise ValueError(f"{where}, column 'effective_date': {row.effective_date} repeated for this root")
        grouped.setdefault(row.root, []).append((row.effective_date, row))
    result = {}
    for root, items in grouped.items():
        items.sort(key=lambda item: item[0])
        result[root] = ([day for day, _ in items], [row for _, row in items])
    return result


@functools.cache
def _margins() -> dict[str, tuple[list[date], list[MarginRow]]]:
    return _dated("margins.csv", MarginRow)


@functools.cache
def _fees() -> dict[str, tuple[list[date], list[FeeRow]]]:
    return _dated("fees.csv", FeeRow)


# --------------------------------------------------------------------------------------------------
# Arrow tables
# --------------------------------------------------------------------------------------------------

_SPECS_SCHEMA = pa.schema(
    [
        pa.field("root", pa.string(), nullable=False),
        pa.field("description", pa.string(), nullable=False),
        pa.field("ib_exchange", pa.string(), nullable=False),
        pa.field("databento_dataset", pa.string(), nullable=False),
        pa.field("databento_venue", pa.string(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("tick_size", pa.float64(), nullable=False),
        pa.field("tick_value", pa.float64(), nullable=False),
        pa.field("multiplier", pa.float64(), nullable=False),
        pa.field("rth_open_et", pa.time32("s"), nullable=False),
        pa.field("rth_close_et", pa.time32("s"), nullable=False),
        pa.field("correlation_group", pa.string(), nullable=False),
        pa.field("contract_months", pa.string(), nullable=False),
        pa.field("expiry_rule", pa.string(), nullable=False),
        pa.field("calendar", pa.string(), nullable=False),
    ]
)

_MARGINS_SCHEMA = pa.schema(
    [
        pa.field("root", pa.string(), nullable=False),
        pa.field("effective_date", pa.date32(), nullable=False),
        pa.field("initial_margin", pa.float64(), nullable=False),
        pa.field("maintenance_margin", pa.float64(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)

_FEES_SCHEMA = pa.schema(
    [
        pa.field("root", pa.string(), nullable=False),
        pa.field("effective_date", pa.date32(), nullable=False),
        pa.field("ib_commission", pa.float64(), nullable=False),
        pa.field("exchange_fee", pa.float64(), nullable=False),
        pa.field("regulatory_fee", pa.float64(), nullable=False),
        pa.field("total_per_side", pa.float64(), nullable=False),
        pa.field("currency", pa.string(), nullable=False),
    ]
)


def _table(schema: pa.Schema, rows: Iterable[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


def specs_table() -> pa.Table:
    """Contract specifications as an Arrow table (one row per root, file order).

    Columns are those of ``contracts.csv``; ``tick_size``, ``tick_value``, ``multiplier`` are float64,
    ``rth_open_et`` / ``rth_close_et`` are ``time32[s]`` (America/New_York wall clock), the rest strings.
    """
    return _table(_SPECS_SCHEMA, (spec.model_dump() for spec in _specs()))


def margins_table() -> pa.Table:
    """Date-effective margins, sorted by root then ``effective_date`` (``date32``); amounts float64 per contract."""
    return _table(_MARGINS_SCHEMA, (row.model_dump() for _, rows in _margins().values() for row in rows))


def fees_table() -> pa.Table:
    """Date-effective per-side fees, sorted by root then ``effective_date`` (``date32``).

    ``total_per_side = ib_commission + exchange_fee + regulatory_fee`` (currency per contract per side).
    """
    return _table(
        _FEES_SCHEMA,
        (row.model_dump() | {"total_per_side": row.total_per_side} for _, rows in _fees().values() for row in rows),
    )


# --------------------------------------------------------------------------------------------------
# Date-effective lookups
# --------------------------------------------------------------------------------------------------


def _as_day(day: date | str) -> date:
    # A datetime would silently pick its own (often UTC) calendar date, not the trading date; refuse it.
    if isinstance(day, datetime):
        raise TypeError("pass a trading date (datetime.date), e.g. warehouse.sessions.trading_date(ts)")
    if isinstance(day, date):
        return day
    if isinstance(day, str) and _ISO_DATE.match(day):
        return date.fromisoformat(day)
    raise TypeError(f"expected a datetime.date or 'YYYY-MM-DD', got {day!r}")


_R = TypeVar("_R")


def _effective(table: dict[str, tuple[list[date], list[_R]]], what: str, root: str, day: date | str) -> _R:
    """The row with the latest ``effective_date <= day``."""
    _spec(root)  # unknown roots get the "unknown root" KeyError
    when = _as_day(day)
    dates, rows = table.get(root, ([], []))
    index = bisect.bisect_right(dates, when) - 1
    if index < 0:
        first = dates[0].isoformat() if dates else "none"
        raise KeyError(f"no {what} for {root} effective on {when.isoformat()} (first effective date: {first})")
    return rows[index]


def first_effective_date(table: str, root: str) -> date | None:
    """The earliest ``effective_date`` of ``root`` in ``"fees"`` or ``"margins"`` (None when it has no row)."""
    dates, _ = {"fees": _fees, "margins": _margins}[table]().get(root, ([], []))
    return dates[0] if dates else None


def margin_on(root: str, day: date | str) -> tuple[float, float]:
    """Initial and maintenance margin per contract in force on ``day``.

    The row used is the one with the latest ``effective_date <= day``.

    Parameters
    ----------
    root : str
        Contract root, e.g. ``"ES"``.
    day : datetime.date or str
        Trading date (``YYYY-MM-DD`` accepted); datetimes are refused because their calendar date is not
        the trading date.

    Returns
    -------
    tuple[float, float]
        ``(initial_margin, maintenance_margin)`` in the contract's currency per contract.

    Raises
    ------
    KeyError
        Unknown root, or ``day`` precedes the root's first effective date.
    """
    row = _effective(_margins(), "margin", root, day)
    return row.initial_margin, row.maintenance_margin


def fee_per_side(root: str, day: date | str) -> float:
    """All-in cost of one contract on one side on ``day``, in the contract's currency.

    ``ib_commission + exchange_fee + regulatory_fee`` of the row with the latest ``effective_date <= day``;
    a round turn costs twice this.

    Raises
    ------
    KeyError
        Unknown root, or ``day`` precedes the root's first effective date.
    """
    return _effective(_fees(), "fee schedule", root, day).total_per_side


# --------------------------------------------------------------------------------------------------
# Symbols
# --------------------------------------------------------------------------------------------------


@functools.cache
def _roots_longest_first() -> tuple[str, ...]:
    # Longest first so that MESZ4 is MES, not ES followed by junk.
    return tuple(sorted((s.root for s in _specs()), key=len, reverse=True))


def _split(symbol: str) -> tuple[str, re.Match[str]] | None:
    for root in _roots_longest_first():
        if symbol.startswith(root):
            match = _SUFFIX.match(symbol[len(root):])
            if match is not None:
                return root, match
    return None


def root_of(symbol: str) -> str | None:
    """The contracts-table root a symbol belongs to, or None.

    The root is the longest root that is a prefix of ``symbol`` such that the rest is empty (``ES``), a
    Databento continuous suffix ``.c.N`` / ``.v.N`` / ``.n.N`` (``ES.v.0``), or a month code plus a 1-2
    digit year (``ESZ3``, ``ESZ13``, ``MESZ4`` -> ``MES``, ``6EH4`` -> ``6E``). Matching is case-sensitive.

    Examples
    --------
    >>> root_of("MESZ4"), root_of("ES.c.0"), root_of("ESX"), root_of("AAPL")
    ('MES', 'ES', None, None)
    """
    if not isinstance(symbol, str):
        return None
    split = _split(symbol)
    return None if split is None else split[0]


def parse_contract(symbol: str, ref_date: date) -> ContractId | None:
    """Root, month and 4-digit year of a single-contract symbol, or None.

    Two-digit years are ``2000 + yy``. A single-digit year ``d`` is ambiguous by decades; it resolves to
    the earliest year ``y`` with ``y % 10 == d`` whose contract month is not before the month preceding
    ``ref_date``'s month (contracts are assumed not yet expired, with one month of grace for data dated just
    after an expiry). When that would be ``ref_date.year + 10`` -- the digit of ``ref_date``'s own year with
    a month already past -- the contract is taken as this year's (expired) one instead, since no exchange
    lists a contract ten years out. The result therefore lies in ``[ref_date.year - 1, ref_date.year + 9]``.

    Parameters
    ----------
    symbol : str
        Exchange symbol such as ``ESZ3`` or ``ESZ13``. Bare roots and continuous names return None.
    ref_date : datetime.date
        Date the symbol was observed (e.g. the bar's trading date).

    Examples
    --------
    >>> parse_contract("ESZ3", date(2013, 12, 2))
    ContractId(root='ES', month=12, year=2013)
    >>> parse_contract("ESH4", date(2013, 12, 2))
    ContractId(root='ES', month=3, year=2014)
    """
    split = _split(symbol) if isinstance(symbol, str) else None
    if split is None or split[1]["month"] is None:
        return None
    root, match = split
    month = MONTH_CODES.index(match["month"]) + 1
    digits = match["year"]
    if len(digits) == 2:
        return ContractId(root, month, 2000 + int(digits))
    digit = int(digits)
    floor = (ref_date.year * 12 + ref_date.month - 1) - 1  # month index of the month before ref_date's
    year = ref_date.year - 1
    while year % 10 != digit or year * 12 + month - 1 < floor:
        year += 1
    if year > ref_date.year + 9:
        year -= 10
    return ContractId(root, month, year)


def contract_symbol(root: str, year: int, month: int) -> str:
    """Exchange symbol of a contract with the single-digit year CME Globex uses.

    ``contract_symbol("ES", 2013, 12) == "ESZ3"``. Pure formatting: the root need not be in the contracts
    table and the month need not be one it lists (loaders format symbols of any product).

    Raises
    ------
    ValueError
        Empty or non-alphanumeric root, month outside 1-12, or a non-positive year.
    """
    if not re.fullmatch(r"[0-9A-Z]+", root or ""):
        raise ValueError(f"root must be upper-case letters/digits, got {root!r}")
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1-12, got {month!r}")
    if year < 1:
        raise ValueError(f"year must be positive, got {year!r}")
    return f"{root}{MONTH_CODES[month - 1]}{year % 10}"


# --------------------------------------------------------------------------------------------------
# Expiries
# --------------------------------------------------------------------------------------------------


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The ``n``-th ``weekday`` (Monday = 0) of a month."""
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _month_end(year: int, month: int) -> date:
    return date(year, month, _calendar.monthrange(year, month)[1])


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def _third_friday(bds: list[date], year: int, month: int) -> date:
    friday = _nth_weekday(year, month, 4, 3)
    return friday if friday in bds else [d for d in bds if d < friday][-1]


def _crude(bds: list[date], year: int, month: int) -> date:
    anchor = date(*_previous_month(year, month), 25)
    before = [d for d in bds if d < anchor]
    # If the 25th is not a business day, count 3 back from the last business day before it: that is the
    # 4th business day before the 25th.
    return before[-3] if anchor in bds else before[-4]


def _natgas(bds: list[date], year: int, month: int) -> date:
    return [d for d in bds if d < date(year, month, 1)][-3]


def _in_month(bds: list[date], year: int, month: int) -> list[date]:
    return [d for d in bds if d.year == year and d.month == month]


def _third_last(bds: list[date], year: int, month: int) -> date:
    return _in_month(bds, year, month)[-3]


def _last_minus_7(bds: list[date], year: int, month: int) -> date:
    return _in_month(bds, year, month)[-8]


def _last(bds: list[date], year: int, month: int) -> date:
    return _in_month(bds, year, month)[-1]


def _third_wednesday_minus_2(bds: list[date], year: int, month: int) -> date:
    wednesday = _nth_weekday(year, month, 2, 3)
    return [d for d in bds if d < wednesday][-2]


_RULES: dict[str, Callable[[list[date], int, int], date]] = {
    "third_friday": _third_friday,
    "crude_25th_minus_3bd": _crude,
    "natgas_3bd_before_month": _natgas,
    "third_last_bd": _third_last,
    "last_bd_minus_7bd": _last_minus_7,
    "last_bd": _last,
    "third_wednesday_minus_2bd": _third_wednesday_minus_2,
}


@functools.lru_cache(maxsize=4096)
def expiry_date(root: str, year: int, month: int) -> date:
    """Last trading day of a contract, per the root's ``expiry_rule`` (see :data:`EXPIRY_RULES`).

    Business days are CME trade dates of the product: days its pandas_market_calendars calendar has a
    session, minus the U.S. holidays on which CME assigns no trade date (see
    :func:`warehouse.sessions.business_days`).

    Parameters
    ----------
    root : str
        Contract root, e.g. ``"CL"``.
    year : int
        4-digit contract (delivery) year.
    month : int
        Contract month 1-12; must be one of the root's ``contract_months``.

    Returns
    -------
    datetime.date
        The last trading day (``CLF24`` -> 2023-12-19, ``ESZ3`` -> 2013-12-20).

    Raises
    ------
    KeyError
        Unknown root.
    ValueError
        Month not listed for the root.
    """
    # Local import: sessions imports this module for the root -> calendar mapping.
    from warehouse.sessions import business_days

    spec = _spec(root)
    if month not in spec.months:
        raise ValueError(f"{root} lists months {spec.contract_months}; month {month} is not one of them")
    # The window covers every rule: the month before the contract month (CL, NG) through its last day.
    start = date(*_previous_month(year, month), 1)
    bds = business_days(root, start, _month_end(year, month))
    return _RULES[spec.expiry_rule](bds, year, month)
