"""The vectorized path: a strategy that is one SQL signal column, backtested without a per-bar Python loop.

The query returns bars (``symbol, ts, open, high, low, close`` + optional ``volume`` and ``contract``) and an
integer **target position** column (signed contracts; NULL keeps the previous target, no target yet means
flat). The run is the one the event engine gives for the strategy
``on_bar: return self.target_position(bar.symbol, bar.target)`` (NULL targets skipped), with the same
tables, schemas and metrics, so the run ledger, ``qe report`` and the HTML report work unchanged.

Conventions (the event engine's, see :mod:`engine.execution.simulated` and :mod:`engine.core.portfolio`):

* A target decided on bar ``t`` of a symbol is sent as one MARKET order of ``target - previous target``
  (a reversal ``+1 -> -1`` is one order of ``-2``, booked as a closing and an opening fill).
* ``fill="next_open"``: the order is submitted at the bar's close (``ts + bar length``) and fills at the open
  of the first later bar of the same symbol with ``ts >= submission + latency``; an order still waiting
  when the data ends stays OPEN (CANCELLED with ``close_at_end``). ``fill="signal_close"`` (no latency):
  it fills at bar ``t``'s close, time-stamped ``ts + bar length``, on bar ``t``'s trading date.
* Slippage: ``none`` or ``fixed`` ticks (rounded up to whole ticks, against the order); other models are a
  :class:`~warehouse.errors.ConfigError` here (they depend on per-bar state: use the event path).
* Commission ``|q| * fee_per_side(symbol, trading date of the fill bar)``; multiplier and tick from the
  :class:`~engine.core.instruments.InstrumentBook` (with the run's overrides).
* Rolls: when a symbol's ``contract`` changes between two of its bars (both non-NULL) while a position is
  held, the position is rolled before the new bar's fills, exactly like ``TradingKernel._roll`` (:mod:`engine.kernel`): ``roll_out``
  at the roll table's ``from_price`` and ``roll_in`` at ``to_price`` (or, without a roll-table row, the
  previous close and the new bar's open, with a ``ROLL_PRICE_FALLBACK`` warning event), slippage and
  commission on both legs, the trade kept open.
* Equity: one point per distinct ``ts``, after every bar of that ``ts``; each open position marked to its
  symbol's latest close (also on a bar whose fill happened at the close: the mark is the close, not the
  slipped fill price).

Not in this path: **no pre-trade risk checks** (``config.risk`` is not applied: no position-size, exposure
or margin denials, no loss breakers or kill switch, every target is traded; unless the limits are
``RiskLimits.off()`` the run records one ``RISK_NOT_CHECKED`` warning event saying so), no volume
participation cap (``participation`` set is a ConfigError), only market orders. Strategies that need those
run through :func:`engine.backtest.run.run_backtest`.

Implementation: the query is read once as an Arrow table (only the columns used; the CME trading date is
computed per 15-minute bucket with the feed's own macro, and rows are put in ``ts, symbol`` order with numpy
unless the query orders them itself); per symbol, numpy finds the order bars (target
changes), their fill bars (``searchsorted`` on the symbol's timestamps), prices, slippage and fees; a Python
loop then books the fills and rolls only (average-price accounting, reversal splits, round trips), and the
equity curve is rebuilt per symbol with ``searchsorted`` over the equity points.
"""

from __future__ import annotations

import math
import time
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.backtest.run import (
    BacktestConfig,
    BacktestResult,
    load_rolls,
)
from engine.data.feed import BAR_NS, REQUIRED_COLUMNS, first_trading_days, infer_timeframe, parse_query
from engine.core.instruments import InstrumentBook
from engine.core.timestamps import iso_utc
from warehouse import schemas
from warehouse.errors import ConfigError, QEError
from warehouse.templates import render_string

__all__ = ["SUPPORTED_SLIPPAGE", "run_vectorized"]

#: Slippage models the vectorized path implements.
SUPPORTED_SLIPPAGE = ("none", "fixed")

_EPS = 1e-9
_KINDS = ("order", "roll_out", "roll_in")
_FILL_COLUMNS = ("order_id", "ts", "day", "sym", "contract", "qty", "price", "ref", "mult", "comm", "slip", "realized",
                 "after", "trade", "kind", "point", "pos_contract", "avg")


#: How to keep a setting the vectorized path cannot honour: the same column through the event engine.
_EVENT_ENGINE = ("run it through the event engine with a strategy instead of --signal "
                 "(-s engine.strategies.signal_follower:SignalFollower -p column=NAME trades the target column NAME)")


def run_vectorized(source: Any, query: str, signal: str = "target", config: BacktestConfig | None = None,
                   *, record: bool | None = None) -> BacktestResult:
    """Backtest the target-position column ``signal`` of ``query`` (see the module docstring).

    Parameters
    ----------
    source : Warehouse or duckdb.DuckDBPyConnection
        Where the query runs. With a :class:`~warehouse.Warehouse` the roll prices come from its roll table
        and the run is recorded in its ledger with ``kind="vectorized"`` (unless ``record=False``); with a
        connection, a ``rolls`` table or view on it is used when there is one.
    query : str
        One SELECT returning ``symbol, ts, open, high, low, close`` (+ ``volume``, ``contract``) and ``signal``.
    signal : str
        Name of the integer target-position column (contracts; NULL = keep the previous target).
    config : BacktestConfig, optional
        ``fill``, ``slippage`` (none/fixed), ``latency_ms``, ``instruments``, ``roll``, ``close_at_end``,
        ``initial_capital``, ``timeframe`` apply; ``risk``, ``intrabar`` and ``limit_through`` do not.

    Returns
    -------
    BacktestResult
        Same tables and metrics as :func:`engine.backtest.run.run_backtest`; ``strategy`` is
        ``vectorized:<signal>``.
    """
    from engine.results.metrics import compute_metrics
    from warehouse import Warehouse

    config = config or BacktestConfig()
    if config.slippage.model not in SUPPORTED_SLIPPAGE:
        raise ConfigError(f"--signal (the vectorized path) supports [backtest.slippage] model = "
                          f"{' | '.join(repr(m) for m in SUPPORTED_SLIPPAGE)}, not {config.slippage.model!r}: change "
                          f"it in the run configuration, or {_EVENT_ENGINE}")
    if config.participation is not None:
        # Name what the user can change (the config key, the command-line alternative), not a Python function.
        raise ConfigError(f"--signal (the vectorized path) has no volume participation cap: remove participation = "
                          f"{config.participation} from [backtest] in the run configuration, or {_EVENT_ENGINE}")
    warehouse = source if isinstance(source, Warehouse) else None
    con = warehouse.connect() if warehouse is not None else source
    timeframe = config.timeframe or infer_timeframe(query)
    if timeframe is None:
        raise ConfigError("cannot tell the bar timeframe from the query; give it (--timeframe / BacktestConfig.timeframe)")
    if timeframe not in BAR_NS:
        raise ConfigError(f"unknown timeframe {timeframe!r}; one of {', '.join(BAR_NS)}")

    started = time.perf_counter()
    InstrumentBook(config.instruments).check_coverage(first_trading_days(con, query), margins=False)
    bars = _load(con, query, signal)
    rolls = {key: (float(a), float(b)) for key, (a, b) in load_rolls(con).items()}
    query_s = time.perf_counter() - started

    loop_started = time.perf_counter()
    run = _Simulation(bars, signal, config, BAR_NS[timeframe], rolls)
    tables = run.tables()
    loop_s = time.perf_counter() - loop_started
    metrics = compute_metrics(tables["equity"], tables["trades"], tables["fills"],
                              initial_capital=config.initial_capital, timeframe=timeframe)
    eq_ts = run.eq_ts
    result = BacktestResult(
        config=config, strategy=f"vectorized:{signal}", params={"signal": signal}, query=query, timeframe=timeframe,
        tables=tables, metrics=metrics,
        timings={"query_s": query_s, "feed_s": 0.0, "loop_s": loop_s, "bars": float(len(bars["ts"]))},
        final_equity=run.final_equity, symbols=sorted(run.symbol_names),
        data_start=int(eq_ts[0]) if len(eq_ts) else None, data_end=int(eq_ts[-1]) if len(eq_ts) else None,
    )
    if warehouse is not None and record is not False:
        from engine.results.ledger import record_run

        record_run(warehouse, result, kind="vectorized")
    return result


# -- helpers ------------------------------------------------------------------------------------------------


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _codes(array: pa.Array) -> tuple[np.ndarray, list]:
    """Dictionary codes (int64, -1 for NULL) and the distinct values of a string-like column."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    encoded = pc.dictionary_encode(array)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


def _targets(array: pa.Array, signal: str, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whole-contract targets as int64 with 0 where NULL, validity mask) of the signal column."""
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    kind = array.type
    if pa.types.is_boolean(kind):
        array = array.cast(pa.int64())
    elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        raise QEError(f"signal column {signal!r} must be numeric (a target position in contracts), not {kind}")
    if pa.types.is_integer(array.type):
        return array.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64), valid
    values = array.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
    bad = valid & ~(np.isfinite(values) & (np.round(values) == values))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise QEError(f"signal column {signal!r} must hold whole contracts; the bar at {iso_utc(int(ts[i]))} has "
                      f"{values[i]!r}")
    return values.astype(np.int64), valid


def _ffill_targets(target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each bar's target carried forward over NULLs; 0 before the first non-NULL one."""
    index = np.where(valid, np.arange(len(target)), -1)
    np.maximum.accumulate(index, out=index)
    return np.where(index >= 0, target[np.maximum(index, 0)], 0)


def _ts_array(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """Integer ns to the ledger's microsecond TIMESTAMPTZ (``mask`` True = NULL)."""
    array = pa.array(np.asarray(values, dtype=np.int64), pa.int64(), mask=mask)
    return array.cast(pa.timestamp("ns", tz="UTC")).cast(schemas.TS, safe=False)


def _risk_enabled(config: BacktestConfig) -> bool:
    """Whether the event engine would check anything with ``config.risk`` (then the run says it did not)."""
    from engine.risk import RiskLimits

    off = getattr(RiskLimits, "off", None)
    return off is None or config.risk != off()


def _slip_offset(model: str, ticks: float, tick: float) -> float:
    """Adverse offset of one fill in price units, rounded up to whole ticks (as the simulated broker does)."""
    if model == "none":
        return 0.0
    raw = ticks * tick
    if raw <= 0:
        return 0.0
    return math.ceil(raw / tick - _EPS) * tick


_BARS_SQL = """{% import 'macros.sql' as m %}
SELECT q.symbol, epoch_ns(q.ts) AS ts, CAST(q.open AS DOUBLE) AS open, CAST(q.close AS DOUBLE) AS close
{%- if contract %}, q.contract{% endif %}, q.{{ signal }} AS qe_signal
{%- if per_row_day %}, CAST({{ m.trading_date('q.ts') }} - DATE '1970-01-01' AS INTEGER) AS qe_trading_day{% endif %}
FROM (
{{ query }}
) AS q
"""

#: Trading dates of 15-minute buckets (every UTC offset is a multiple of 15 minutes, and the CME trading
#: date changes at 18:00 New York time, so it is constant inside a bucket).
_DAYS_SQL = """{% import 'macros.sql' as m %}
SELECT CAST({{ m.trading_date('b.t') }} - DATE '1970-01-01' AS INTEGER) AS qe_trading_day
FROM (SELECT {{ cast }} AS t, i FROM {{ table }}) AS b
ORDER BY b.i
"""

_RISK_MESSAGE = ("vectorized run: no pre-trade risk checks or breakers, config.risk is not applied "
                 "(run the strategy through the event engine to enforce it)")
_BUCKET_NS = 15 * 60 * 1_000_000_000
_TS_CASTS = {"TIMESTAMP WITH TIME ZONE": "to_timestamp(s)", "TIMESTAMP": "make_timestamp(us)"}


def _load(con: duckdb.DuckDBPyConnection, query: str, signal: str) -> dict[str, Any]:
    """The bars and the signal as numpy arrays, in the event loop's order (``ts``, then ``symbol``).

    Only the columns the simulation needs leave DuckDB; the CME trading date (the feed's ``qe_trading_day``,
    same macro) is computed once per 15-minute bucket instead of once per bar.
    """
    tree = parse_query(query)
    query = query.strip().rstrip(";")
    try:
        relation = con.sql(query)
        returned = [c.lower() for c in relation.columns]
        types = dict(zip(returned, (str(t) for t in relation.types)))
    except duckdb.Error as exc:
        raise QEError(f"backtest query failed: {str(exc).splitlines()[0]}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in returned]
    if missing:
        raise QEError(f"backtest query must return columns {', '.join(REQUIRED_COLUMNS)}; missing: {', '.join(missing)}")
    if signal.lower() not in returned:
        raise QEError(f"the query returns no signal column {signal!r} (columns: {', '.join(returned)})")
    has_contract = "contract" in returned
    ts_cast = _TS_CASTS.get(types["ts"])
    sql = render_string(_BARS_SQL, query=query, contract=has_contract, per_row_day=ts_cast is None,
                        signal='"' + signal.replace('"', '""') + '"')
    try:
        table = con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise QEError(f"backtest query failed: {str(exc).splitlines()[0]}") from exc

    ts_col = _column(table, "ts")
    if ts_col.null_count:
        raise QEError("backtest query returned a bar without a ts")
    ts = ts_col.to_numpy(zero_copy_only=False).astype(np.int64)
    sym, names = _codes(_column(table, "symbol"))
    if (sym < 0).any():
        i = int(np.flatnonzero(sym < 0)[0])
        raise QEError(f"backtest query returned a bar without a symbol at {iso_utc(int(ts[i]))}")
    bars: dict[str, Any] = {
        "ts": ts, "sym": sym, "names": names,
        "open": _column(table, "open").to_numpy(zero_copy_only=False).astype(np.float64),
        "close": _column(table, "close").to_numpy(zero_copy_only=False).astype(np.float64),
        "contract": None, "contract_names": [],
    }
    if has_contract:
        bars["contract"], bars["contract_names"] = _codes(_column(table, "contract"))
    bars["target"], bars["valid"] = _targets(_column(table, "qe_signal"), signal, ts)
    if ts_cast is None:
        bars["day"] = _column(table, "qe_trading_day").to_numpy(zero_copy_only=False).astype(np.int64)

    n = len(ts)
    if tree.args.get("order") is None and n > 1:
        # the feed's ORDER BY ts, symbol (symbols by their text); skipped when the rows already are in order
        rank = np.empty(len(names), np.int64)
        rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
        key = rank[sym]
        step, kstep = np.diff(ts), np.diff(key)
        if not ((step > 0) | ((step == 0) & (kstep >= 0))).all():
            order = np.lexsort((key, ts))
            for name in ("ts", "sym", "open", "close", "contract", "target", "valid", "day"):
                if bars.get(name) is not None:
                    bars[name] = bars[name][order]
            ts = bars["ts"]
    elif n > 1:
        back = np.flatnonzero(ts[1:] < ts[:-1])
        if len(back):
            i = int(back[0])
            raise QEError("backtest query must be ordered by ts: a bar at "
                          f"{iso_utc(int(ts[i + 1]))} follows one at {iso_utc(int(ts[i]))}")

    if ts_cast is not None:
        buckets, inverse = np.unique(ts // _BUCKET_NS, return_inverse=True)
        start = buckets * _BUCKET_NS
        name = f"qe_vectorized_buckets_{id(bars):x}"
        con.register(name, pa.table({"i": np.arange(len(buckets)), "s": (start // 1_000_000_000).astype(np.float64),
                                     "us": start // 1000}))
        try:
            days = con.sql(render_string(_DAYS_SQL, cast=ts_cast, table=name)).to_arrow_table()
        finally:
            con.unregister(name)
        bars["day"] = _column(days, "qe_trading_day").to_numpy(zero_copy_only=False).astype(np.int64)[inverse]
    return bars


# -- the simulation ---------------------------------------------------------------------------------------


class _Simulation:
    """Orders, fills and equity of one vectorized run (everything is computed in ``__init__``)."""

    def __init__(self, bars: dict[str, Any], signal: str, config: BacktestConfig, bar_ns: int,
                 rolls: dict[tuple[str, str, str], tuple[float, float]]) -> None:
        self.config = config
        self.book = InstrumentBook(config.instruments)
        ts, open_, close, day = bars["ts"], bars["open"], bars["close"], bars["day"]
        sym, names = bars["sym"], bars["names"]
        contract, contract_names = bars["contract"], bars["contract_names"]
        target, valid = bars["target"], bars["valid"]
        n = len(ts)
        self.symbol_names = names

        # equity points: one per distinct ts
        new_point = np.ones(n, dtype=bool)
        if n > 1:
            new_point[1:] = ts[1:] != ts[:-1]
        point = np.cumsum(new_point) - 1
        self.eq_ts = ts[new_point]
        self.eq_day = day[new_point]
        n_points = len(self.eq_ts)

        fill_at_close = config.fill == "signal_close" and config.latency_ms == 0
        delay = bar_ns + int(config.latency_ms * 1_000_000)
        slip_model, slip_ticks = config.slippage.model, config.slippage.ticks

        # per symbol: its rows (ascending), orders and their fill rows, roll candidates
        by_symbol = np.argsort(sym, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(sym, minlength=len(names)))])
        self.rows_of = [by_symbol[bounds[k]:bounds[k + 1]] for k in range(len(names))]
        o_row, o_qty, o_fill = [], [], []
        r_row, r_prev = [], []
        for k, rows in enumerate(self.rows_of):
            wanted = _ffill_targets(target[rows], valid[rows])
            before = np.concatenate([[0], wanted[:-1]])
            at = np.flatnonzero(wanted != before)
            o_row.append(rows[at])
            o_qty.append(wanted[at] - before[at])
            if fill_at_close:
                o_fill.append(rows[at])
            else:
                sym_ts = ts[rows]
                j = np.searchsorted(sym_ts, sym_ts[at] + delay, side="left")
                o_fill.append(np.where(j < len(rows), rows[np.minimum(j, len(rows) - 1)], -1))
            if contract is not None and config.roll and len(rows) > 1:
                c = contract[rows]
                change = np.flatnonzero((c[1:] >= 0) & (c[:-1] >= 0) & (c[1:] != c[:-1])) + 1
                r_row.append(rows[change])
                r_prev.append(rows[change - 1])

        # orders, numbered in the order the event loop would submit them (bar order)
        o_row = np.concatenate(o_row) if o_row else np.zeros(0, np.int64)
        o_qty = np.concatenate(o_qty) if o_qty else np.zeros(0, np.int64)
        o_fill = np.concatenate(o_fill) if o_fill else np.zeros(0, np.int64)
        numbering = np.argsort(o_row, kind="stable")
        o_row, o_qty, o_fill = o_row[numbering], o_qty[numbering], o_fill[numbering]
        n_orders = len(o_row)
        o_sym = sym[o_row]

        # the order fills: reference, price, slippage and commission, vectorized per symbol
        filled = o_fill >= 0
        f_order = np.flatnonzero(filled)
        f_row = o_fill[f_order]
        f_qty = o_qty[f_order]
        f_sym = o_sym[f_order]
        f_ref = (close if fill_at_close else open_)[f_row]
        f_ts = ts[f_row] + (bar_ns if fill_at_close else 0)
        f_day = day[f_row]
        f_off = np.zeros(len(f_order))
        f_mult = np.zeros(len(f_order))
        f_fee = np.zeros(len(f_order))
        self.offsets: dict[int, float] = {}
        self.multipliers: dict[int, float] = {}
        for k in np.unique(o_sym).tolist():
            terms = self.book.terms(names[k])
            self.offsets[k] = _slip_offset(slip_model, slip_ticks, terms.tick_size)
            self.multipliers[k] = terms.multiplier
            mine = f_sym == k
            f_off[mine] = self.offsets[k]
            f_mult[mine] = terms.multiplier
            days, inverse = np.unique(f_day[mine], return_inverse=True)
            fees = np.array([self.book.fee_per_side(names[k], d) for d in days.tolist()], dtype=np.float64)
            f_fee[mine] = fees[inverse]
        absq = np.abs(f_qty)
        f_price = np.where(f_qty > 0, f_ref + f_off, f_ref - f_off)
        f_comm = absq * f_fee
        f_slip = absq * f_off * f_mult
        f_contract = contract[f_row] if contract is not None else np.full(len(f_row), -1)

        # per order, for the orders table
        self.o_row, self.o_qty, self.o_sym = o_row, o_qty, o_sym
        self.o_submitted = ts[o_row] + bar_ns
        self.o_done = np.zeros(n_orders, np.int64)
        self.o_done[f_order] = f_ts
        self.o_price = np.full(n_orders, np.nan)
        self.o_price[f_order] = absq * f_price / absq
        self.o_filled = filled

        # every fill and roll in the order the event loop meets them: bar, then roll / order fills, then id
        r_row = np.concatenate(r_row) if r_row else np.zeros(0, np.int64)
        r_prev = np.concatenate(r_prev) if r_prev else np.zeros(0, np.int64)
        ev_row = np.concatenate([r_row, f_row])
        ev_phase = np.concatenate([np.zeros(len(r_row), np.int64), np.ones(len(f_row), np.int64)])
        ev_id = np.concatenate([np.arange(len(r_row)), f_order])
        sequence = np.lexsort((ev_id, ev_phase, ev_row)).tolist()
        n_rolls = len(r_row)

        self._setup_book()
        self.events: list[tuple[int, str, str, str | None, int | None, str]] = []
        if n_points and _risk_enabled(config):
            self.events.append((int(self.eq_ts[0]), "warning", "RISK_NOT_CHECKED", None, None, _RISK_MESSAGE))
        # python scalars for the loop
        fl = [a.tolist() for a in (f_order, f_ts, f_day, f_sym, f_contract, f_qty, f_price, f_ref, f_mult, f_comm,
                                    f_slip, point[f_row])]
        rl = [a.tolist() for a in (r_row, ts[r_row], day[r_row], sym[r_row], contract[r_row] if n_rolls else r_row,
                                    contract[r_prev] if n_rolls else r_row, open_[r_row], close[r_prev], point[r_row])]
        book, roll = self._book_order, self._roll
        for e in sequence:
            if e < n_rolls:
                r_ts, r_day, r_sym, r_new, r_old = rl[1][e], rl[2][e], rl[3][e], rl[4][e], rl[5][e]
                if r_sym in self.positions:
                    roll(r_ts, r_day, r_sym, contract_names[r_old], contract_names[r_new], rl[6][e], rl[7][e],
                         rl[8][e], rolls)
            else:
                i = e - n_rolls
                c = fl[4][i]
                book(fl[0][i], fl[1][i], fl[2][i], fl[3][i], contract_names[c] if c >= 0 else None, fl[5][i],
                     fl[6][i], fl[7][i], fl[8][i], fl[9][i], fl[10][i], 0, fl[11][i])

        # the end of data
        self.end_orders: list[tuple[int, int, int, float]] = []  # (symbol, quantity, ts, price)
        self.cancel_open = bool(config.close_at_end and n_points)
        if self.cancel_open:
            last_ts, last_day = int(self.eq_ts[-1]), int(self.eq_day[-1])
            for k in list(self.positions):
                pos = self.positions[k]
                quantity = -pos[0]
                mark = float(close[self.rows_of[k][-1]])
                offset = self.offsets[k]
                price = mark + offset if quantity > 0 else mark - offset
                fee = self.book.fee_per_side(names[k], last_day)
                order_id = n_orders + len(self.end_orders)
                self.end_orders.append((k, quantity, last_ts, price))
                self._book_order(order_id, last_ts, last_day, k, pos[2], quantity, price, mark, pos[3],
                                 abs(quantity) * fee, abs(quantity) * offset * pos[3], 0, n_points - 1)

        self.n_points = n_points
        self.point = point
        self.close = close
        self.ts = ts
        self._equity()

    # -- booking (Portfolio.apply / _book / roll, on plain lists) ----------------------------------------
    def _setup_book(self) -> None:
        #: symbol -> [quantity, avg_price, contract, multiplier, trade]; insertion order like Portfolio.positions
        self.positions: dict[int, list] = {}
        #: [trade_id, symbol, direction, entry_ts, max_qty, entry_value, entry_qty, exit_value, exit_qty,
        #:  gross_pnl, commission, slippage, rolls, exit_ts]
        self.trades: list[list] = []
        #: one tuple per booked fill, in the columns of _FILL_COLUMNS
        self.rows: list[tuple] = []

    def _book_order(self, order_id: int, ts: int, day: int, sym: int, contract: str | None, q: int, price: float,
                    ref: float, mult: float, comm: float, slip: float, kind: int, point: int) -> None:
        pos = self.positions.get(sym)
        held = 0 if pos is None else pos[0]
        if held != 0 and (held > 0) != (q > 0) and abs(q) > abs(held):
            # a reversal: the closing part, then the opening part; costs pro rata per contract
            for part in (-held, q + held):
                share = abs(part) / abs(q)
                self._book(order_id, ts, day, sym, contract, part, price, ref, mult, comm * share, slip * share, kind,
                           point)
        else:
            self._book(order_id, ts, day, sym, contract, q, price, ref, mult, comm, slip, kind, point)

    def _book(self, order_id: int, ts: int, day: int, sym: int, contract: str | None, q: int, price: float,
              ref: float, mult: float, comm: float, slip: float, kind: int, point: int) -> None:
        pos = self.positions.get(sym)
        if pos is None:
            trade = [len(self.trades), sym, 1 if q > 0 else -1, ts, 0, 0.0, 0, 0.0, 0, 0.0, 0.0, 0.0, 0, None]
            self.trades.append(trade)
            pos = self.positions[sym] = [0, price, contract, mult, trade]
        trade = pos[4]
        held = pos[0]
        realized = 0.0
        if held == 0 or (held > 0) == (q > 0):
            new = held + q
            pos[1] = (abs(held) * pos[1] + abs(q) * price) / abs(new)
            pos[0] = new
            trade[5] += abs(q) * price
            trade[6] += abs(q)
            trade[4] = max(trade[4], abs(new))
        else:
            closed = abs(q)
            realized = (price - pos[1]) * closed * (1 if held > 0 else -1) * pos[3]
            pos[0] = held + q
            trade[7] += closed * price
            trade[8] += closed
        if contract is not None:
            pos[2] = contract
        trade[9] += realized
        trade[10] += comm
        trade[11] += slip
        after = pos[0]
        if after == 0:
            del self.positions[sym]
            trade[13] = ts
        self.rows.append((order_id, ts, day, sym, contract, q, price, ref, mult, comm, slip, realized, after, trade[0],
                          kind, point, pos[2], pos[1] if after else 0.0))

    def _roll(self, ts: int, day: int, sym: int, old: str, new: str, open_: float, last_close: float, point: int,
              rolls: dict[tuple[str, str, str], tuple[float, float]]) -> None:
        name = self.symbol_names[sym]
        pos = self.positions[sym]
        prices = rolls.get((name, old, new))
        if prices is None:
            prices = (last_close, open_)
            self.events.append((ts, "warning", "ROLL_PRICE_FALLBACK", name, None,
                                f"no roll table row for {old}->{new}; rolled at last mark {last_close} / open {open_}"))
        out_price, in_price = prices
        offset = self.offsets[sym]
        mult = self.multipliers[sym]
        fee = self.book.fee_per_side(name, day)
        quantity = pos[0]
        trade = pos[4]
        for kind, contract, q, reference in ((1, old, -quantity, out_price), (2, new, quantity, in_price)):
            price = reference + offset if q > 0 else reference - offset
            comm, slip = abs(q) * fee, abs(q) * offset * mult
            held = pos[0]
            realized = 0.0
            if held != 0 and (held > 0) != (q > 0):
                realized = (price - pos[1]) * abs(q) * (1 if held > 0 else -1) * pos[3]
                pos[0] = held + q
            else:
                after = held + q
                pos[1] = (abs(held) * pos[1] + abs(q) * price) / abs(after)
                pos[0] = after
            pos[2] = contract
            pos[3] = mult
            trade[9] += realized
            trade[10] += comm
            trade[11] += slip
            if pos[0] == 0:
                pos[1] = 0.0
            self.rows.append((-1, ts, day, sym, contract, q, price, reference, mult, comm, slip, realized, pos[0],
                              trade[0], kind, point, contract, pos[1]))
        trade[12] += 1

    def _columns(self) -> dict[str, list]:
        """The booked fills column by column."""
        if not self.rows:
            return {c: [] for c in _FILL_COLUMNS}
        return dict(zip(_FILL_COLUMNS, map(list, zip(*self.rows))))

    # -- equity ---------------------------------------------------------------------------------------------
    def _equity(self) -> None:
        n_points = self.n_points
        f = self.fills = self._columns()
        f_point = np.array(f["point"], dtype=np.int64)
        grid = np.arange(n_points)
        last = np.searchsorted(f_point, grid, side="right") - 1
        has = last >= 0
        at = np.maximum(last, 0)

        def running(name: str) -> np.ndarray:
            values = np.cumsum(np.array(f[name], dtype=np.float64)) if len(f_point) else np.zeros(1)
            return np.where(has, values[at], 0.0)

        self.realized = running("realized")
        self.commissions = running("comm")
        self.slippage = running("slip")
        unrealized = np.zeros(n_points)
        notional = np.zeros(n_points)
        f_sym = np.array(f["sym"], dtype=np.int64)
        f_after = np.array(f["after"], dtype=np.int64)
        f_avg = np.array(f["avg"], dtype=np.float64)
        f_mult = np.array(f["mult"], dtype=np.float64)
        for k in np.unique(f_sym).tolist():
            mine = np.flatnonzero(f_sym == k)
            j = np.searchsorted(f_point[mine], grid, side="right") - 1
            held = j >= 0
            jj = mine[np.maximum(j, 0)]
            quantity = np.where(held, f_after[jj], 0)
            avg = np.where(held, f_avg[jj], 0.0)
            mult = f_mult[jj]
            rows = self.rows_of[k]
            m = np.searchsorted(self.point[rows], grid, side="right") - 1
            mark = np.where(m >= 0, self.close[rows[np.maximum(m, 0)]], 0.0)
            open_ = quantity != 0
            unrealized += np.where(open_, quantity * mult * (mark - avg), 0.0)
            notional += np.where(open_, np.abs(quantity) * mult * mark, 0.0)
        self.unrealized = unrealized
        self.gross_notional = notional
        self.cash = self.config.initial_capital + self.realized - self.commissions
        self.equity = self.cash + unrealized
        self.final_equity = float(self.equity[-1]) if n_points else float(self.config.initial_capital)

    # -- tables ---------------------------------------------------------------------------------------------
    def tables(self) -> dict[str, pa.Table]:
        return {
            "orders": self._orders_table(),
            "fills": self._fills_table(),
            "positions": self._positions_table(),
            "equity": self._equity_table(),
            "trades": self._trades_table(),
            "events": self._events_table(),
        }

    def _names(self, codes: np.ndarray | list) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(self.symbol_names, pa.string())) \
            .cast(pa.string())

    def _orders_table(self) -> pa.Table:
        n = len(self.o_row)
        end = self.end_orders
        total = n + len(end)
        filled = self.o_filled
        if self.cancel_open:
            status = np.where(filled, "FILLED", "CANCELLED")
            done = np.where(filled, self.o_done, int(self.eq_ts[-1]))
            done_null = np.zeros(n, dtype=bool)
            detail = np.where(filled, "", "end of data")
        else:
            status = np.where(filled, "FILLED", "OPEN")
            done = self.o_done
            done_null = ~filled
            detail = np.full(n, "", dtype=object)
        end_q = [e[1] for e in end]
        return pa.table(
            {
                "run_id": pa.nulls(total, pa.string()),
                "order_id": np.arange(total, dtype=np.int64),
                "ts_submitted": _ts_array(np.concatenate([self.o_submitted, [e[2] for e in end]]).astype(np.int64)),
                "symbol": self._names(np.concatenate([self.o_sym, [e[0] for e in end]]).astype(np.int64)),
                "quantity": np.concatenate([self.o_qty, end_q]).astype(np.int64),
                "order_type": pa.array(["MARKET"] * total, pa.string()),
                "tif": pa.array(["GTC"] * total, pa.string()),
                "limit_price": pa.nulls(total, pa.float64()),
                "stop_price": pa.nulls(total, pa.float64()),
                "expire_ts": pa.nulls(total, schemas.TS),
                "status": pa.array(status.tolist() + ["FILLED"] * len(end), pa.string()),
                "filled_quantity": np.concatenate([np.where(filled, self.o_qty, 0), end_q]).astype(np.int64),
                "avg_fill_price": pa.array(np.concatenate([self.o_price, [abs(q) * e[3] / abs(q) for q, e in zip(end_q, end)]]),
                                           pa.float64(), from_pandas=True),
                "ts_done": _ts_array(np.concatenate([done, [e[2] for e in end]]).astype(np.int64),
                                     np.concatenate([done_null, np.zeros(len(end), dtype=bool)])),
                "origin": pa.array(["strategy"] * n + ["end_of_run"] * len(end), pa.string()),
                "tag": pa.array([""] * n + ["end of data"] * len(end), pa.string()),
                "detail": pa.array(detail.tolist() + [""] * len(end), pa.string()),
                "parent_id": pa.nulls(total, pa.int64()),  # target positions trade independent market orders
                "oca_group": pa.nulls(total, pa.string()),
            },
            schema=schemas.RUN_ORDERS,
        )

    def _fills_table(self) -> pa.Table:
        f = self.fills
        n = len(f["ts"])
        order_id = np.array(f["order_id"], dtype=np.int64)
        return pa.table(
            {
                "run_id": pa.nulls(n, pa.string()),
                "fill_id": np.arange(n, dtype=np.int64),
                "order_id": pa.array(order_id, pa.int64(), mask=order_id < 0),
                "ts": _ts_array(np.array(f["ts"], dtype=np.int64)),
                "trading_date": pa.array(np.array(f["day"], dtype=np.int32), pa.int32()).cast(pa.date32()),
                "symbol": self._names(f["sym"]),
                "contract": pa.array(f["contract"], pa.string()),
                "quantity": pa.array(f["qty"], pa.int64()),
                "price": pa.array(f["price"], pa.float64()),
                "reference_price": pa.array(f["ref"], pa.float64()),
                "multiplier": pa.array(f["mult"], pa.float64()),
                "commission": pa.array(f["comm"], pa.float64()),
                "slippage": pa.array(f["slip"], pa.float64()),
                "realized_pnl": pa.array(f["realized"], pa.float64()),
                "position_after": pa.array(f["after"], pa.int64()),
                "trade_id": pa.array(f["trade"], pa.int64()),
                "kind": pa.DictionaryArray.from_arrays(pa.array(f["kind"], pa.int8()), pa.array(_KINDS)).cast(pa.string()),
            },
            schema=schemas.RUN_FILLS,
        )

    def _positions_table(self) -> pa.Table:
        f = self.fills
        n = len(f["ts"])
        return pa.table(
            {
                "run_id": pa.nulls(n, pa.string()),
                "ts": _ts_array(np.array(f["ts"], dtype=np.int64)),
                "symbol": self._names(f["sym"]),
                "contract": pa.array(f["pos_contract"], pa.string()),
                "quantity": pa.array(f["after"], pa.int64()),
                "avg_price": pa.array(f["avg"], pa.float64()),
            },
            schema=schemas.RUN_POSITIONS,
        )

    def _equity_table(self) -> pa.Table:
        n = self.n_points
        return pa.table(
            {
                "run_id": pa.nulls(n, pa.string()),
                "ts": _ts_array(self.eq_ts),
                "trading_date": pa.array(self.eq_day.astype(np.int32), pa.int32()).cast(pa.date32()),
                "equity": self.equity,
                "cash": self.cash,
                "unrealized": self.unrealized,
                "realized": self.realized,
                "commissions": self.commissions,
                "slippage": self.slippage,
                "gross_notional": self.gross_notional,
            },
            schema=schemas.RUN_EQUITY,
        )

    def _trades_table(self) -> pa.Table:
        rows = self.trades
        n = len(rows)
        eq_ts = self.eq_ts
        last = int(eq_ts[-1]) if len(eq_ts) else 0
        entry_ts = np.array([t[3] for t in rows], dtype=np.int64)
        open_ = np.array([t[13] is None for t in rows], dtype=bool)
        exit_ts = np.array([t[13] if t[13] is not None else 0 for t in rows], dtype=np.int64)
        held = np.searchsorted(eq_ts, np.where(open_, last + 1, exit_ts)) - np.searchsorted(eq_ts, entry_ts)
        return pa.table(
            {
                "run_id": pa.nulls(n, pa.string()),
                "trade_id": pa.array([t[0] for t in rows], pa.int64()),
                "symbol": self._names([t[1] for t in rows]),
                "direction": pa.array([t[2] for t in rows], pa.int8()),
                "max_quantity": pa.array([t[4] for t in rows], pa.int64()),
                "entry_ts": _ts_array(entry_ts),
                "exit_ts": _ts_array(exit_ts, open_),
                "entry_price": pa.array([t[5] / t[6] if t[6] else None for t in rows], pa.float64()),
                "exit_price": pa.array([t[7] / t[8] if t[8] else None for t in rows], pa.float64()),
                "gross_pnl": pa.array([t[9] for t in rows], pa.float64()),
                "commission": pa.array([t[10] for t in rows], pa.float64()),
                "slippage": pa.array([t[11] for t in rows], pa.float64()),
                "pnl": pa.array([t[9] - t[10] for t in rows], pa.float64()),
                "rolls": pa.array([t[12] for t in rows], pa.int64()),
                "bars_held": pa.array(held.astype(np.int64), pa.int64()),
            },
            schema=schemas.RUN_TRADES,
        )

    def _events_table(self) -> pa.Table:
        rows = self.events
        return pa.table(
            {
                "run_id": pa.nulls(len(rows), pa.string()),
                "ts": _ts_array(np.array([r[0] for r in rows], dtype=np.int64)),
                "kind": pa.array([r[1] for r in rows], pa.string()),
                "code": pa.array([r[2] for r in rows], pa.string()),
                "symbol": pa.array([r[3] for r in rows], pa.string()),
                "order_id": pa.array([r[4] for r in rows], pa.int64()),
                "message": pa.array([r[5] for r in rows], pa.string()),
            },
            schema=schemas.RUN_EVENTS,
        )
