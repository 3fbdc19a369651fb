"""Per-symbol trading terms for the engine: tick, multiplier, fees and margins by trading date.

Everything comes from the contract tables shipped with the warehouse (``warehouse/data/*.csv``); a run can
override them per symbol (for plain series that are not a listed root, or to test a what-if fee). Lookups
are cached per (symbol, trading date) because the event loop asks on every fill and every order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field

from warehouse.contracts import fee_per_side, first_effective_date, load_specs, margin_on, root_of
from warehouse.errors import ConfigError

__all__ = ["InstrumentOverride", "Terms", "InstrumentBook", "EPOCH"]

EPOCH = date(1970, 1, 1)


class InstrumentOverride(BaseModel):
    """Terms given in a run's configuration for one symbol; unset fields come from the contract tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    multiplier: float | None = Field(default=None, gt=0)
    tick_size: float | None = Field(default=None, gt=0)
    fee_per_side: float | None = Field(default=None, ge=0)
    initial_margin: float | None = Field(default=None, ge=0)
    correlation_group: str | None = None


@dataclass(frozen=True, slots=True)
class Terms:
    """The static terms of one symbol.

    Attributes
    ----------
    root : str
        Contract root (``ES``), or the symbol itself for an overridden plain series.
    multiplier : float
        Currency per 1.0 price unit per contract.
    tick_size : float
        Minimum price increment, price units.
    correlation_group : str
    """

    root: str
    multiplier: float
    tick_size: float
    correlation_group: str


class InstrumentBook:
    """Terms, fees and margins of every symbol a run trades.

    Parameters
    ----------
    overrides : dict, optional
        Symbol -> :class:`InstrumentOverride` (or a dict of its fields).
    """

    def __init__(self, overrides: dict[str, InstrumentOverride | dict] | None = None) -> None:
        self._specs = load_specs()
        self._overrides = {k.upper(): InstrumentOverride.model_validate(v) for k, v in (overrides or {}).items()}
        self._terms: dict[str, Terms] = {}
        self._fees: dict[tuple[str, int], float] = {}
        self._margins: dict[tuple[str, int], float] = {}

    def terms(self, symbol: str) -> Terms:
        """Static terms of ``symbol``; a clear error if it is neither a listed root nor overridden."""
        found = self._terms.get(symbol)
        if found is None:
            found = self._terms[symbol] = self._resolve(symbol)
        return found

    def _resolve(self, symbol: str) -> Terms:
        override = self._overrides.get(symbol.upper(), InstrumentOverride())
        root = root_of(symbol) if _is_listed(symbol, self._specs) else None
        spec = self._specs.get(root) if root else None
        multiplier = override.multiplier or (spec.multiplier if spec else None)
        tick = override.tick_size or (spec.tick_size if spec else None)
        if multiplier is None or tick is None:
            raise ConfigError(
                f"symbol {symbol!r} is not a listed root ({', '.join(self._specs)}); give its multiplier, tick_size, "
                "fee_per_side and initial_margin in the run's instruments config"
            )
        group = override.correlation_group or (spec.correlation_group if spec else symbol)
        return Terms(root or symbol, float(multiplier), float(tick), group)

    def fee_per_side(self, symbol: str, trading_day: int) -> float:
        """All-in commission per contract per side (IB + exchange + regulatory) on a trading date.

        ``trading_day`` is the CME trading date as days since 1970-01-01.
        """
        return self._dated(self._fees, "fee_per_side", symbol, trading_day,
                           lambda root, day: fee_per_side(root, day))

    def initial_margin(self, symbol: str, trading_day: int) -> float:
        """Initial margin per contract in force on a trading date (days since 1970-01-01)."""
        return self._dated(self._margins, "initial_margin", symbol, trading_day,
                           lambda root, day: margin_on(root, day)[0])

    def check_coverage(self, first_days: dict[str, int], *, margins: bool) -> None:
        """Fail before a run if a fee (or, with ``margins``, margin) row is missing for any date it can need.

        ``first_days`` maps each symbol to its first trading date (days since 1970-01-01); the tables are
        date-effective, so a row in force on the first date covers every later one. Symbols that are not
        listed roots and have no override are skipped here (ordering one is refused with its own error).

        Raises
        ------
        ConfigError
            One line naming the symbol, the first uncovered date, the table's first effective date and the
            two ways out: an earlier row in the table, or an override in the run's configuration.
        """
        needs = [("fee_per_side", "fees", self.fee_per_side)]
        if margins:
            needs.append(("initial_margin", "margins", self.initial_margin))
        for symbol, day in sorted(first_days.items()):
            try:
                root = self.terms(symbol).root
            except ConfigError:
                continue
            for field, table, lookup in needs:
                try:
                    lookup(symbol, day)
                except KeyError:
                    first = (EPOCH + timedelta(days=day)).isoformat()
                    starts = first_effective_date(table, root)
                    raise ConfigError(
                        f"{symbol}: the {table} table (warehouse/data/{table}.csv) "
                        f"{f'starts {starts.isoformat()}' if starts else f'has no row for {root}'}, but the query "
                        f"has {symbol} bars from trading date {first}: add a {root} row effective on or before "
                        f"{first}, or set {field} under [backtest.instruments.{symbol}] in the run configuration"
                    ) from None

    def _dated(self, cache: dict, field: str, symbol: str, trading_day: int, lookup) -> float:  # noqa: ANN001
        """A date-effective amount: the run's override of ``field`` if set, else the table's row; cached."""
        key = (symbol, trading_day)
        value = cache.get(key)
        if value is None:
            override = self._overrides.get(symbol.upper())
            value = getattr(override, field) if override is not None else None
            if value is None:
                value = lookup(self._root_or_fail(symbol, field), EPOCH + timedelta(days=trading_day))
            cache[key] = value
        return value

    def _root_or_fail(self, symbol: str, what: str) -> str:
        terms = self.terms(symbol)
        if terms.root not in self._specs:
            raise ConfigError(f"symbol {symbol!r} is not a listed root: give its {what} in the run's instruments config")
        return terms.root


def _is_listed(symbol: str, specs: dict) -> bool:
    try:
        return root_of(symbol) in specs
    except (KeyError, ValueError):
        return False
