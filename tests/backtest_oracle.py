"""Independent numpy oracle of a moving-average crossover backtest (one symbol, 1-minute bars).

Written from the backtest spec only; it never imports the engine, so the engine's tests and the backtest
benchmark can check it against an implementation that shares no code with it.

Strategy and accounting (the spec):

* ``SMA_n`` at bar ``t`` = mean of ``close[t-n+1 .. t]``, defined from ``t = n - 1``.
* Cross up at bar ``t`` (``t >= slow``) when ``fast[t-1] <= slow[t-1]`` and ``fast[t] > slow[t]`` -> target
  ``+quantity``; cross down when ``fast[t-1] >= slow[t-1]`` and ``fast[t] < slow[t]`` -> target ``-quantity``.
  Flat before the first cross. Reverse on cross: ``+q -> -q`` is ONE order of ``-2q``. A cross that asks for
  the position already held (e.g. ``fast - slow`` going ``+, 0, +``) sends no order.
* Fill ``"next_open"``: the order decided on bar ``t`` fills at ``open[t+1]`` (a signal on the last bar is never
  filled); ``"signal_close"``: it fills at ``close[t]``. No slippage.
* Commission = ``|qty| * commission_per_side`` on every fill (a reversal of 2 contracts pays it for 2 contracts,
  once; a close pays it once).
* Average-price accounting: a fill that reduces the position realizes
  ``(fill - avg) * closed_qty * sign(position) * multiplier``; equity after bar ``t`` is marked at ``close[t]``:
  ``initial_capital + realized - commissions + position * multiplier * (close[t] - avg)``. The position open
  at the end stays open (marked at the last close), it is not liquidated.

Exactness of the crossing decision: prices are on the tick grid, so the oracle works in integer ticks
(``close / tick`` as int64, rolling sums by an int64 cumsum) and compares ``sum_fast * slow`` with
``sum_slow * fast``: exact, no floating ties. An engine comparing the double averages ``avg(close)`` reaches the
same decisions: a sum of at most ``slow`` grid prices is an exact double, each average is the correctly rounded
quotient (rounding is monotonic, equal quotients give equal doubles), and two different averages differ by at
least ``tick / (fast * slow)`` (0.25 / 1000 for 20/50), about 1e9 times the rounding error at ES prices, so no
strict inequality can flip or collapse into a tie.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NS_PER_MINUTE = 60_000_000_000
#: 2020-01-02 00:00:00 UTC in ns.
START_TS_NS = 1_577_923_200 * 1_000_000_000


@dataclass
class Fills:
    """One row per fill (numpy arrays of equal length)."""

    bar_index: np.ndarray  # int64, the bar on which the fill happens (t + 1 for next_open)
    ts: np.ndarray  # int64 ns, ts[bar_index]
    quantity: np.ndarray  # int64, signed contracts
    price: np.ndarray  # float64
    commission: np.ndarray  # float64, >= 0
    realized_pnl: np.ndarray  # float64, gross of commission
    position_after: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.bar_index)


@dataclass
class Trades:
    """Closed round trips. A reversal fill closes one trade and opens the next; its commission is split pro rata
    per contract between the two. The trade still open at the end is not listed (see ``OracleResult.open_trade``)."""

    entry_bar: np.ndarray  # int64, bar index of the entry fill
    exit_bar: np.ndarray  # int64, bar index of the fill that brought the position back to zero (or reversed it)
    direction: np.ndarray  # int64, +1 long / -1 short
    gross_pnl: np.ndarray  # float64
    commission: np.ndarray  # float64, entry + exit share
    net_pnl: np.ndarray  # float64, gross - commission

    def __len__(self) -> int:
        return len(self.entry_bar)


@dataclass
class OracleResult:
    fills: Fills
    trades: Trades
    equity: np.ndarray  # float64 per bar, marked at close[t]
    position: np.ndarray  # int64 per bar, position held after bar t
    final_equity: float
    total_commission: float
    realized: float  # gross realized P&L (before commissions)
    unrealized: float  # open position marked at the last close
    initial_capital: float
    open_trade: dict | None = field(default=None)  # entry_bar, direction, quantity, avg_price, commission so far


def sma_cross_signals(close: np.ndarray, fast: int = 20, slow: int = 50, tick: float = 0.25) -> np.ndarray:
    """Per bar: +1 on a cross up, -1 on a cross down, 0 otherwise (exact integer arithmetic in ticks)."""
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    if fast <= 0 or slow <= 0:
        raise ValueError("fast and slow must be positive")
    ticks = np.rint(close / tick).astype(np.int64)
    if not np.array_equal(ticks.astype(np.float64) * tick, close):
        raise ValueError("close prices are not on the tick grid")
    signal = np.zeros(n, dtype=np.int64)
    longest = max(fast, slow)
    if n <= longest:
        return signal
    csum = np.concatenate([[0], np.cumsum(ticks)])
    t = np.arange(longest - 1, n)  # bars where both SMAs are defined
    sum_fast = csum[t + 1] - csum[t + 1 - fast]
    sum_slow = csum[t + 1] - csum[t + 1 - slow]
    # sign(fast_t - slow_t) == sign(sum_fast * slow - sum_slow * fast); int64 is ample (|ticks| * slow * fast).
    d = np.sign(sum_fast * slow - sum_slow * fast)
    prev, cur = d[:-1], d[1:]  # cur is bar t for t = longest .. n-1
    up = (prev <= 0) & (cur > 0)
    down = (prev >= 0) & (cur < 0)
    signal[longest:] = up.astype(np.int64) - down.astype(np.int64)
    return signal


def sma_cross_backtest(
    open_: np.ndarray,
    close: np.ndarray,
    ts: np.ndarray,
    fast: int = 20,
    slow: int = 50,
    multiplier: float = 50.0,
    commission_per_side: float = 2.25,
    quantity: int = 1,
    fill: str = "next_open",
    initial_capital: float = 1_000_000.0,
    tick: float = 0.25,
) -> OracleResult:
    """Run the SMA crossover backtest of the module docstring and return every fill, trade and equity point."""
    if fill not in ("next_open", "signal_close"):
        raise ValueError(f"fill must be 'next_open' or 'signal_close', not {fill!r}")
    open_ = np.asarray(open_, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.int64)
    n = len(close)
    if not (len(open_) == len(ts) == n):
        raise ValueError("open_, close and ts must have the same length")

    # Vectorized signal -> orders: keep the signal bars whose target differs from the previous target.
    signal = sma_cross_signals(close, fast, slow, tick)
    sig_bars = np.flatnonzero(signal)
    targets = signal[sig_bars] * int(quantity)
    keep = targets != np.concatenate([[0], targets[:-1]])
    sig_bars, targets = sig_bars[keep], targets[keep]
    order_qty = np.diff(np.concatenate([[0], targets]))
    if fill == "next_open":
        fill_bars = sig_bars + 1
        ok = fill_bars < n  # a signal on the last bar is never filled
        fill_bars, order_qty = fill_bars[ok], order_qty[ok]
        fill_px = open_[fill_bars]
    else:
        fill_bars = sig_bars
        fill_px = close[fill_bars]

    # Python loop over fills only: average-price accounting and round trips.
    m = len(fill_bars)
    commission = np.abs(order_qty).astype(np.float64) * commission_per_side
    realized_pnl = np.zeros(m)
    pos_after = np.zeros(m, dtype=np.int64)
    avg_after = np.zeros(m)
    pos, avg = 0, 0.0
    trades: list[tuple[int, int, int, float, float]] = []
    trade: list | None = None  # [entry_bar, direction, gross, commission]
    for i in range(m):
        q, px, bar, comm = int(order_qty[i]), float(fill_px[i]), int(fill_bars[i]), float(commission[i])
        closed = 0
        if pos != 0 and np.sign(q) != np.sign(pos):
            closed = min(abs(q), abs(pos))
            pnl = (px - avg) * closed * np.sign(pos) * multiplier
            realized_pnl[i] = pnl
            trade[2] += pnl
            trade[3] += comm * closed / abs(q)
        new_pos = pos + q
        opened = abs(q) - closed  # contracts that open or add in the direction of new_pos
        if new_pos == 0:
            avg = 0.0
        elif pos == 0 or np.sign(new_pos) != np.sign(pos):
            avg = px  # fresh position (from flat or after a reversal)
        elif abs(new_pos) > abs(pos):
            avg = (avg * abs(pos) + px * abs(q)) / abs(new_pos)  # adding: average price
        # reducing without crossing zero keeps avg
        if trade is not None and (new_pos == 0 or np.sign(new_pos) != np.sign(pos)):
            trades.append((trade[0], bar, trade[1], trade[2], trade[3]))
            trade = None
        if opened > 0 and new_pos != 0:
            if trade is None:
                trade = [bar, int(np.sign(new_pos)), 0.0, 0.0]
            trade[3] += comm * opened / abs(q)
        pos = new_pos
        pos_after[i], avg_after[i] = pos, avg

    # Equity per bar: state after the last fill on or before bar t (a next_open fill at t+1 counts from t+1).
    realized_cum = np.cumsum(realized_pnl)
    comm_cum = np.cumsum(commission)
    k = np.searchsorted(fill_bars, np.arange(n), side="right") - 1
    has = k >= 0
    kk = np.where(has, k, 0)
    pos_bar = np.where(has, pos_after[kk] if m else 0, 0).astype(np.int64)
    avg_bar = np.where(has, avg_after[kk] if m else 0.0, 0.0)
    real_bar = np.where(has, realized_cum[kk] if m else 0.0, 0.0)
    comm_bar = np.where(has, comm_cum[kk] if m else 0.0, 0.0)
    unreal_bar = pos_bar * multiplier * (close - avg_bar)
    equity = initial_capital + real_bar - comm_bar + unreal_bar

    realized = float(realized_cum[-1]) if m else 0.0
    total_commission = float(comm_cum[-1]) if m else 0.0
    unrealized = float(unreal_bar[-1]) if n else 0.0
    tr = np.array(trades, dtype=np.float64).reshape(-1, 5)
    return OracleResult(
        fills=Fills(
            bar_index=fill_bars.astype(np.int64),
            ts=ts[fill_bars],
            quantity=order_qty.astype(np.int64),
            price=fill_px.astype(np.float64),
            commission=commission,
            realized_pnl=realized_pnl,
            position_after=pos_after,
        ),
        trades=Trades(
            entry_bar=tr[:, 0].astype(np.int64),
            exit_bar=tr[:, 1].astype(np.int64),
            direction=tr[:, 2].astype(np.int64),
            gross_pnl=tr[:, 3],
            commission=tr[:, 4],
            net_pnl=tr[:, 3] - tr[:, 4],
        ),
        equity=equity,
        position=pos_bar,
        final_equity=float(equity[-1]) if n else float(initial_capital),
        total_commission=total_commission,
        realized=realized,
        unrealized=unrealized,
        initial_capital=float(initial_capital),
        open_trade=None if trade is None else {
            "entry_bar": trade[0], "direction": trade[1], "quantity": pos, "avg_price": avg, "commission": trade[3],
        },
    )


def random_walk_bars(n: int, seed: int = 0, start_price: float = 4000.0, tick: float = 0.25) -> dict[str, np.ndarray]:
    """``n`` consecutive 1-minute bars from 2020-01-02 00:00 UTC: a random walk in whole ticks.

    Returns numpy arrays ``ts`` (int64 ns), ``open``/``high``/``low``/``close`` (float64 on the tick grid, all > 0,
    ``high >= max(open, close)``, ``low <= min(open, close)``) and ``volume`` (int64 > 0). The open is the previous
    close plus a small gap (-1..+1 tick), so next-open and signal-close fills differ.
    """
    rng = np.random.default_rng(seed)
    floor = 8  # ticks; the walk is reflected above it so every price stays positive
    start = int(np.rint(start_price / tick))
    walk = start + np.cumsum(np.rint(rng.normal(0.0, 2.0, n)).astype(np.int64))
    c = np.where(walk < floor, 2 * floor - walk, walk)
    o = np.concatenate([[start], c[:-1]]) + rng.integers(-1, 2, n)
    o = np.maximum(o, floor)
    h = np.maximum(o, c) + rng.integers(0, 4, n)
    lo = np.maximum(np.minimum(o, c) - rng.integers(0, 4, n), 1)
    return {
        "ts": START_TS_NS + np.arange(n, dtype=np.int64) * NS_PER_MINUTE,
        "open": o * tick,
        "high": h * tick,
        "low": lo * tick,
        "close": c * tick,
        "volume": rng.integers(1, 1000, n, dtype=np.int64),
    }
