"""The futures the simulated gateway lists: every root of the contracts table, the next twelve months.

Terms (exchange, currency, tick, multiplier) come from ``warehouse/data/contracts.csv``; last trading days
from its expiry rules; local symbols use CME's single-digit year (``MESH6``), which is unambiguous inside a
twelve-month window. Contract ids are deterministic so that tests and restarts agree:
``conId = (position of the root in the table + 1) * 1_000_000 + year * 100 + month``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from warehouse.contracts import ContractSpec, contract_symbol, expiry_date, load_specs, root_of

__all__ = ["ListedFuture", "ContractQuery", "FuturesListing"]

_WINDOW_MONTHS = 12


@dataclass(frozen=True, slots=True)
class ListedFuture:
    """One listed futures contract as IB describes it.

    Attributes
    ----------
    con_id : int
    root : str
        IB ``symbol`` and ``tradingClass`` (for the roots in the table they coincide).
    local_symbol : str
        ``MESH6``.
    contract_month : str
        ``YYYYMM``.
    last_trade_date : str
        ``YYYYMMDD``.
    spec : ContractSpec
        The row of the contracts table (exchange, currency, tick size, multiplier).
    """

    con_id: int
    root: str
    local_symbol: str
    contract_month: str
    last_trade_date: str
    spec: ContractSpec

    @property
    def exchange(self) -> str:
        return self.spec.ib_exchange

    @property
    def currency(self) -> str:
        return self.spec.currency

    @property
    def multiplier(self) -> float:
        return self.spec.multiplier


@dataclass(frozen=True, slots=True)
class ContractQuery:
    """The contract fields of a request; empty strings and 0 mean "any"."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade: str = ""
    multiplier: str = ""
    exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""

    def describe(self) -> str:
        """A short human description for error texts."""
        parts = [self.symbol or self.local_symbol or (str(self.con_id) if self.con_id else "?"), self.last_trade,
                 self.exchange]
        return " ".join(p for p in parts if p)


class FuturesListing:
    """Contracts listed on ``today``: months ``[today's month, +12)`` whose last trading day is not past.

    Parameters
    ----------
    today : datetime.date
        The simulator's trading date (decides which contracts exist).
    """

    def __init__(self, today: date) -> None:
        self.today = today
        self._specs = load_specs()
        self._index = {root: k for k, root in enumerate(self._specs)}
        self._listed: dict[str, tuple[ListedFuture, ...]] = {}

    def futures(self, root: str) -> tuple[ListedFuture, ...]:
        """Listed contracts of ``root`` in expiry order (empty for a root not in the table)."""
        listed = self._listed.get(root)
        if listed is None:
            # Expiry rules consult the exchange calendar (slow the first time): list a root when first asked.
            listed = self._listed[root] = self._list(root)
        return listed

    def _list(self, root: str) -> tuple[ListedFuture, ...]:
        spec = self._specs.get(root)
        if spec is None:
            return ()
        listed = []
        start = self.today.year * 12 + self.today.month - 1
        for k in range(start, start + _WINDOW_MONTHS):
            year, month = divmod(k, 12)
            month += 1
            if month not in spec.months:
                continue
            last = expiry_date(root, year, month)
            if last < self.today:
                continue
            listed.append(ListedFuture(
                con_id=(self._index[root] + 1) * 1_000_000 + year * 100 + month,
                root=root,
                local_symbol=contract_symbol(root, year, month),
                contract_month=f"{year:04d}{month:02d}",
                last_trade_date=last.strftime("%Y%m%d"),
                spec=spec,
            ))
        return tuple(listed)

    def by_con_id(self, con_id: int) -> ListedFuture | None:
        """The contract with ``con_id``, if listed."""
        roots = list(self._specs)
        position = con_id // 1_000_000 - 1
        if not 0 <= position < len(roots):
            return None
        return next((f for f in self.futures(roots[position]) if f.con_id == con_id), None)

    def match(self, query: ContractQuery) -> list[ListedFuture]:
        """Every listed future the query's non-empty fields agree with (IB's reqContractDetails matching)."""
        if query.sec_type and query.sec_type != "FUT":
            return []
        if query.con_id:
            found = self.by_con_id(query.con_id)
            candidates = [found] if found else []
        else:
            root = query.symbol or query.trading_class or (root_of(query.local_symbol) or "")
            candidates = list(self.futures(root))
        return [f for f in candidates if _agrees(f, query)]


def _agrees(future: ListedFuture, q: ContractQuery) -> bool:
    if q.symbol and q.symbol != future.root:
        return False
    if q.trading_class and q.trading_class != future.root:
        return False
    if q.local_symbol and q.local_symbol != future.local_symbol:
        return False
    # IB renamed GLOBEX to CME: the old name finds nothing, as at a real gateway.
    if q.exchange and q.exchange not in (future.exchange, "SMART"):
        return False
    if q.currency and q.currency != future.currency:
        return False
    if q.multiplier and float(q.multiplier) != future.multiplier:
        return False
    if q.last_trade:
        wanted = q.last_trade[:8]
        if len(wanted) == 6 and wanted != future.contract_month:
            return False
        if len(wanted) == 8 and wanted != future.last_trade_date:
            return False
    return True
