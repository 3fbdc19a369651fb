"""Self-tests of the SMA-crossover backtest oracle (tests/backtest_oracle.py) against hand-worked numbers."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.backtest_oracle import (
    NS_PER_MINUTE,
    START_TS_NS,
    random_walk_bars,
    sma_cross_backtest,
    sma_cross_signals,
)

# Hand-worked series, fast=2, slow=3 (whole points are on the 0.25 grid):
#
#  t  open   close  SMA2   SMA3     fast-slow  event (t >= 3)
#  0  10     10     -      -        -
#  1  10     10     10     -        -
#  2  10     10     10     10       0
#  3  10.5   11     10.5   10.333   +          prev 0 <= 0, now > 0  -> cross UP   (target +1)
#  4  11.5   12     11.5   11       +
#  5  12.25  11     11.5   11.333   +
#  6  10.5   9      10     10.667   -          prev + >= 0, now < 0  -> cross DOWN (target -1)
#  7  8.75   8      8.5    9.333    -
#  8  8      9      8.5    8.667    -
#  9  9.5    11     10     9.333    +          -> cross UP (target +1)
# 10  11.25  12     11.5   10.667   +
OPEN = np.array([10, 10, 10, 10.5, 11.5, 12.25, 10.5, 8.75, 8, 9.5, 11.25])
CLOSE = np.array([10, 10, 10, 11, 12, 11, 9, 8, 9, 11, 12], dtype=np.float64)
TS = START_TS_NS + np.arange(len(CLOSE), dtype=np.int64) * NS_PER_MINUTE
KW = {"fast": 2, "slow": 3, "multiplier": 50.0, "commission_per_side": 2.25, "quantity": 1, "initial_capital": 100_000.0}


def test_hand_signals():
    sig = sma_cross_signals(CLOSE, 2, 3)
    assert sig.tolist() == [0, 0, 0, 1, 0, 0, -1, 0, 0, 1, 0]


def test_hand_next_open():
    r = sma_cross_backtest(OPEN, CLOSE, TS, fill="next_open", **KW)
    # signal t=3 (+1) -> buy 1 at open[4] = 11.50, commission 2.25; position +1 @ 11.50
    # signal t=6 (-1) -> sell 2 at open[7] = 8.75, commission 2 * 2.25 = 4.50 (once);
    #                    realized (8.75 - 11.50) * 1 * 50 = -137.50; position -1 @ 8.75
    # signal t=9 (+1) -> buy 2 at open[10] = 11.25, commission 4.50;
    #                    realized (11.25 - 8.75) * 1 * (-1) * 50 = -125.00; position +1 @ 11.25
    # end: +1 marked at close[10] = 12: unrealized (12 - 11.25) * 50 = 37.50 (left open, not liquidated)
    # final = 100000 - 262.50 - 11.25 + 37.50 = 99763.75
    assert r.fills.bar_index.tolist() == [4, 7, 10]
    assert r.fills.ts.tolist() == TS[[4, 7, 10]].tolist()
    assert r.fills.quantity.tolist() == [1, -2, 2]
    assert r.fills.price.tolist() == [11.5, 8.75, 11.25]
    assert r.fills.commission.tolist() == [2.25, 4.5, 4.5]
    assert r.fills.realized_pnl.tolist() == [0.0, -137.5, -125.0]
    assert r.fills.position_after.tolist() == [1, -1, 1]
    assert r.realized == -262.5
    assert r.total_commission == 11.25
    assert r.unrealized == 37.5
    assert r.final_equity == 99_763.75
    # Equity marked at each close:
    #  bars 0-3 flat: 100000
    #  bar 4: -2.25 + (12 - 11.5) * 50 = +22.75            -> 100022.75
    #  bar 5: -2.25 + (11 - 11.5) * 50 = -27.25            ->  99972.75
    #  bar 6: -2.25 + (9 - 11.5) * 50 = -127.25            ->  99872.75 (order sent, filled next open)
    #  bar 7: -137.5 - 6.75 - (8 - 8.75) * 50 = -106.75    ->  99893.25
    #  bar 8: -137.5 - 6.75 - (9 - 8.75) * 50 = -156.75    ->  99843.25
    #  bar 9: -137.5 - 6.75 - (11 - 8.75) * 50 = -256.75   ->  99743.25
    #  bar 10: -262.5 - 11.25 + 37.5                       ->  99763.75
    assert r.equity.tolist() == [100_000.0] * 4 + [100_022.75, 99_972.75, 99_872.75, 99_893.25, 99_843.25, 99_743.25,
                                                   99_763.75]
    assert r.position.tolist() == [0, 0, 0, 0, 1, 1, 1, -1, -1, -1, 1]
    # Round trips: the reversal fills close one trade and open the next, 4.50 split 2.25 / 2.25.
    assert r.trades.entry_bar.tolist() == [4, 7]
    assert r.trades.exit_bar.tolist() == [7, 10]
    assert r.trades.direction.tolist() == [1, -1]
    assert r.trades.gross_pnl.tolist() == [-137.5, -125.0]
    assert r.trades.commission.tolist() == [4.5, 4.5]
    assert r.trades.net_pnl.tolist() == [-142.0, -129.5]
    assert r.open_trade == {"entry_bar": 10, "direction": 1, "quantity": 1, "avg_price": 11.25, "commission": 2.25}


def test_hand_signal_close():
    r = sma_cross_backtest(OPEN, CLOSE, TS, fill="signal_close", **KW)
    # t=3: buy 1 at close 11, comm 2.25
    # t=6: sell 2 at close 9, comm 4.50, realized (9 - 11) * 50 = -100
    # t=9: buy 2 at close 11, comm 4.50, realized (11 - 9) * (-1) * 50 = -100
    # end: +1 @ 11 marked at 12: +50; final = 100000 - 200 - 11.25 + 50 = 99838.75
    assert r.fills.bar_index.tolist() == [3, 6, 9]
    assert r.fills.price.tolist() == [11.0, 9.0, 11.0]
    assert r.fills.quantity.tolist() == [1, -2, 2]
    assert r.fills.commission.tolist() == [2.25, 4.5, 4.5]
    assert r.fills.realized_pnl.tolist() == [0.0, -100.0, -100.0]
    assert (r.realized, r.total_commission, r.unrealized) == (-200.0, 11.25, 50.0)
    assert r.final_equity == 99_838.75
    # bar 3 already holds the position: 100000 - 2.25 + (11 - 11) * 50
    assert r.equity[:4].tolist() == [100_000.0, 100_000.0, 100_000.0, 99_997.75]
    # bar 6: -100 - 6.75 + (-1) * (9 - 9) * 50
    assert r.equity[6] == 100_000.0 - 106.75
    assert r.trades.net_pnl.tolist() == [-104.5, -104.5]


def test_last_bar_signal_is_never_filled_with_next_open():
    # Cut after bar 9: its cross up is the last bar.
    r = sma_cross_backtest(OPEN[:10], CLOSE[:10], TS[:10], fill="next_open", **KW)
    assert r.fills.bar_index.tolist() == [4, 7]
    # still short 1 @ 8.75, marked at close[9] = 11: (11 - 8.75) * -50 = -112.50
    assert r.unrealized == -112.5
    assert r.final_equity == 100_000.0 - 137.5 - 6.75 - 112.5
    r = sma_cross_backtest(OPEN[:10], CLOSE[:10], TS[:10], fill="signal_close", **KW)
    assert r.fills.bar_index.tolist() == [3, 6, 9]  # filled at its own close
    assert r.unrealized == 0.0


def test_reversal_pays_two_contracts_once():
    r = sma_cross_backtest(OPEN, CLOSE, TS, fill="next_open", **{**KW, "quantity": 2})
    # quantity 2: +2, then -4 (one order), then +4: commissions 4.50, 9.00, 9.00
    assert r.fills.quantity.tolist() == [2, -4, 4]
    assert r.fills.commission.tolist() == [4.5, 9.0, 9.0]
    assert r.total_commission == 22.5
    assert r.realized == 2 * -262.5
    # each round trip: entry share + exit share of the reversal commission, never double counted
    assert r.trades.commission.tolist() == [9.0, 9.0]
    assert r.trades.commission.sum() + r.open_trade["commission"] == r.total_commission


def test_no_order_when_cross_repeats_the_held_target():
    # An exact tie: fast - slow goes +, 0, + -> the literal rule signals "up" twice, but only one order is sent.
    close = np.array([10.0, 10, 10, 12, 12, 12, 13])
    # t=2: 10 vs 10 (0); t=3: 11 vs 10.667 (+) up; t=4: 12 vs 11.333 (+); t=5: 12 vs 12 (0);
    # t=6: 12.5 vs 12.333 (+) -> "up" again (prev 0 <= 0)
    sig = sma_cross_signals(close, 2, 3)
    assert sig.tolist() == [0, 0, 0, 1, 0, 0, 1]
    r = sma_cross_backtest(close, close, np.arange(len(close)), fill="signal_close", **KW)
    assert r.fills.bar_index.tolist() == [3]  # the second "up" asks for the position already held
    assert r.fills.quantity.tolist() == [1]


def test_off_grid_prices_rejected():
    with pytest.raises(ValueError):
        sma_cross_signals(np.array([4000.1] * 10), 2, 3)
    with pytest.raises(ValueError):
        sma_cross_backtest(OPEN, CLOSE, TS, fill="close", **KW)


def _brute_signals(close: np.ndarray, fast: int, slow: int) -> list[int]:
    """Exact rational SMAs and the literal spec rule, one bar at a time."""
    c = [Fraction(x) for x in close.tolist()]
    sma = lambda t, k: sum(c[t - k + 1 : t + 1]) / k
    out = [0] * len(c)
    for t in range(slow, len(c)):
        f0, s0, f1, s1 = sma(t - 1, fast), sma(t - 1, slow), sma(t, fast), sma(t, slow)
        out[t] = 1 if (f0 <= s0 and f1 > s1) else (-1 if (f0 >= s0 and f1 < s1) else 0)
    return out


def _brute_backtest(o, c, fast, slow, mult, comm, q, fill, cap):
    """A straightforward per-bar loop of the spec (targets, fills, average price, equity marked at the close)."""
    sig = _brute_signals(c, fast, slow)
    n = len(c)
    pos, avg, realized, fees, pending = 0, 0.0, 0.0, 0.0, None
    equity = []

    def execute(qty, px):
        nonlocal pos, avg, realized, fees
        fees += abs(qty) * comm
        if pos and (qty > 0) != (pos > 0):
            closed = min(abs(qty), abs(pos))
            realized += (px - avg) * closed * (1 if pos > 0 else -1) * mult
        new = pos + qty
        if new == 0:
            avg = 0.0
        elif pos == 0 or (new > 0) != (pos > 0):
            avg = px
        elif abs(new) > abs(pos):
            avg = (avg * abs(pos) + px * abs(qty)) / abs(new)
        pos = new

    for t in range(n):
        if pending is not None:
            execute(pending, o[t])
            pending = None
        if sig[t]:
            order = sig[t] * q - pos
            if order:
                if fill == "signal_close":
                    execute(order, c[t])
                else:
                    pending = order  # an order pending after the last bar is dropped
        equity.append(cap + realized - fees + pos * mult * (c[t] - avg))
    return np.array(equity), realized, fees


@pytest.mark.parametrize("fill", ["next_open", "signal_close"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_brute_force_on_random_walk(fill, seed):
    b = random_walk_bars(3000, seed, start_price=100.0)
    for fast, slow in ((2, 3), (3, 7), (20, 50)):
        r = sma_cross_backtest(b["open"], b["close"], b["ts"], fast=fast, slow=slow, fill=fill, quantity=2,
                               initial_capital=50_000.0)
        assert r.fills.quantity.tolist()  # some trading happens
        sig = _brute_signals(b["close"], fast, slow)
        assert sma_cross_signals(b["close"], fast, slow).tolist() == sig
        equity, realized, fees = _brute_backtest(b["open"], b["close"], fast, slow, 50.0, 2.25, 2, fill, 50_000.0)
        np.testing.assert_allclose(r.equity, equity, rtol=0, atol=1e-6)
        assert r.realized == pytest.approx(realized, abs=1e-6)
        assert r.total_commission == pytest.approx(fees, abs=1e-9)


@pytest.mark.parametrize("fill", ["next_open", "signal_close"])
def test_pnl_identity_random_walk(fill):
    b = random_walk_bars(200_000, 7)
    r = sma_cross_backtest(b["open"], b["close"], b["ts"], fill=fill, initial_capital=1_000_000.0)
    assert len(r.fills) > 1000
    # Prices on the 0.25 grid, multiplier 50, commissions of 2.25: every term is exact in binary floating point.
    assert r.final_equity - r.initial_capital == r.realized + r.unrealized - r.total_commission
    assert r.final_equity == r.equity[-1]
    assert r.total_commission == np.abs(r.fills.quantity).sum() * 2.25
    assert r.realized == r.fills.realized_pnl.sum()
    # Reversals after the first entry: every fill but the first trades 2 contracts.
    assert abs(r.fills.quantity[0]) == 1 and (np.abs(r.fills.quantity[1:]) == 2).all()
    assert np.array_equal(r.fills.position_after, np.sign(r.fills.quantity))
    # Round trips: gross sums to realized, commissions (plus the open trade's entry share) to the total.
    assert len(r.trades) == len(r.fills) - 1
    assert r.trades.gross_pnl.sum() == r.realized
    assert r.trades.commission.sum() + r.open_trade["commission"] == r.total_commission
    assert (r.trades.direction == -np.roll(r.trades.direction, 1))[1:].all()
    assert (r.trades.exit_bar[:-1] == r.trades.entry_bar[1:]).all()
    if fill == "next_open":
        assert np.array_equal(r.fills.price, b["open"][r.fills.bar_index])
    else:
        assert np.array_equal(r.fills.price, b["close"][r.fills.bar_index])


def test_random_walk_bars_valid():
    b = random_walk_bars(100_000, 3)
    assert set(b) == {"ts", "open", "high", "low", "close", "volume"}
    assert b["ts"].dtype == np.int64 and b["volume"].dtype == np.int64
    assert b["ts"][0] == START_TS_NS  # 2020-01-02 00:00 UTC
    assert (np.diff(b["ts"]) == NS_PER_MINUTE).all()
    for col in ("open", "high", "low", "close"):
        assert b[col].dtype == np.float64
        assert (b[col] > 0).all()
        assert np.array_equal(np.rint(b[col] * 4) / 4, b[col])
    assert (b["high"] >= np.maximum(b["open"], b["close"])).all()
    assert (b["low"] <= np.minimum(b["open"], b["close"])).all()
    assert (b["volume"] > 0).all()
    assert (b["open"][1:] != b["close"][:-1]).any()  # gaps exist, so the fill conventions differ
    # deterministic by seed, positive even from a low start
    assert np.array_equal(random_walk_bars(1000, 5)["close"], random_walk_bars(1000, 5)["close"])
    low = random_walk_bars(200_000, 1, start_price=5.0)
    assert (low["low"] > 0).all() and (low["open"] > 0).all()


def test_oracle_speed_one_million_bars():
    import time

    b = random_walk_bars(1_000_000, 11)
    start = time.perf_counter()
    r = sma_cross_backtest(b["open"], b["close"], b["ts"])
    assert time.perf_counter() - start < 10.0  # ~0.2 s on the development machine
    assert len(r.equity) == 1_000_000


def test_duckdb_double_smas_decide_like_the_oracle():
    """The engine compares DuckDB's double ``avg(close)`` windows; on the tick grid that decides exactly like the
    oracle's integer arithmetic (see the module note in tests/backtest_oracle.py), ties included."""
    import duckdb

    for seed, start, (fast, slow) in ((4, 4000.0, (20, 50)), (5, 3.0, (2, 3)), (6, 100.0, (3, 7))):
        b = random_walk_bars(100_000, seed, start_price=start)
        con = duckdb.connect()
        con.register("c", {"i": np.arange(len(b["close"])), "close": b["close"]})
        fs, ss = con.sql(
            f"SELECT CASE WHEN i >= {fast - 1} THEN avg(close) OVER (ORDER BY i ROWS {fast - 1} PRECEDING) END, "
            f"CASE WHEN i >= {slow - 1} THEN avg(close) OVER (ORDER BY i ROWS {slow - 1} PRECEDING) END "
            "FROM c ORDER BY i"
        ).fetchnumpy().values()
        f, s = np.asarray(fs, dtype=np.float64), np.asarray(ss, dtype=np.float64)
        sig = np.zeros(len(f), dtype=np.int64)
        pf, ps, cf, cs = f[slow - 1 : -1], s[slow - 1 : -1], f[slow:], s[slow:]
        sig[slow:] = ((pf <= ps) & (cf > cs)).astype(np.int64) - ((pf >= ps) & (cf < cs)).astype(np.int64)
        assert np.array_equal(sig, sma_cross_signals(b["close"], fast, slow))
        if (fast, slow) == (2, 3):
            assert (f[2:] == s[2:]).sum() > 100  # exact ties do occur and are handled identically
        con.close()
