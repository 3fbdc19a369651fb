"""Bad ticks: prices at the wrong scale and one-bar spikes are quarantined; real moves and gaps load.

Every expected verdict below is worked by hand from the rule in loaders/bad_ticks.py: scale tolerance 0.2
(|log10(ratio) - k| <= 0.2, k != 0), spike limit ln-return 0.15 for equity index, 0.35 for energy.
"""

from __future__ import annotations

from loaders.ingest import ingest
from tests.conftest import LEAN, REPO, write_csv

HEADER = "symbol,ts,open,high,low,close,volume"


def _bars(contract: str, start_minute: int, closes: list[float], day: str = "2024-01-02") -> list[str]:
    """One 1m bar per close (open = high = low = close, on the tick grid), consecutive minutes from 15:start_minute."""
    rows = []
    for i, c in enumerate(closes):
        minute = start_minute + i
        rows.append(f"{contract},{day} {15 + minute // 60:02d}:{minute % 60:02d},{c},{c},{c},{c},10")
    return rows


def _ingest(wh, tmp_path, rows):  # noqa: ANN001, ANN202
    path = write_csv(tmp_path / "bars.csv", HEADER, rows)
    [report] = ingest(wh, [path], timeframe="1m")
    assert report.error is None
    quarantined = wh.sql("SELECT row, rule, detail FROM quarantine ORDER BY row").to_pylist()
    return report, quarantined


def test_a_hundredfold_price_inside_one_contract_is_quarantined_with_its_reference(wh, tmp_path):
    # log10(372025 / 3703.25) = log10(100.459) = 2.002 -> k = 2; back down: -2. Levels 0,0,2,0,0: base 0.
    report, [bad] = _ingest(wh, tmp_path, _bars("ESH4", 0, [3703.00, 3703.25, 372025.00, 3703.50, 3703.75]))
    assert report.quarantined == {"bad_tick_scale": 1} and report.rows_loaded == 4
    assert bad["row"] == 4  # the third data row is line 4
    assert "close=372025" in bad["detail"] and "10^2" in bad["detail"] and "reference close 3703.25" in bad["detail"]
    assert wh.sql("SELECT max(close) AS m FROM contract_bars_1m").to_pylist() == [{"m": 3703.75}]


def test_a_price_divided_by_a_hundred_is_caught(wh, tmp_path):
    # log10(47.00 / 4700.25) = -2.00002 -> k = -2.
    report, [bad] = _ingest(wh, tmp_path, _bars("ESH4", 0, [4700.00, 4700.25, 47.00, 4700.50]))
    assert (bad["row"], bad["rule"]) == (4, "bad_tick_scale") and "10^-2" in bad["detail"]
    assert report.rows_loaded == 3


def test_a_run_at_the_wrong_scale_is_caught_however_long_it_is(wh, tmp_path):
    # 6 bars at 4700, then 5 bars x10 (log10(47002.5/4700.25) = 1.0000), then 6 bars back at 4700: the
    # x10 level holds 5 of 17 bars, so level 0 (12 bars) is genuine and all 5 are flagged, not only the first.
    closes = [4700.00 + 0.25 * i for i in range(6)] + [47002.50] * 5 + [4701.50 + 0.25 * i for i in range(6)]
    report, bad = _ingest(wh, tmp_path, _bars("ESH4", 0, closes))
    assert [r["row"] for r in bad] == [8, 9, 10, 11, 12]
    assert {r["rule"] for r in bad} == {"bad_tick_scale"}
    assert all("reference close 4701.25" in r["detail"] for r in bad)  # last genuine close before the run
    assert report.rows_loaded == 12


def test_a_wrong_scale_at_the_start_of_a_file_takes_its_reference_from_after(wh, tmp_path):
    # Two bars /10 then four genuine: level -1 for 2 bars, 0 for 4 -> base 0; reference = first genuine close.
    report, bad = _ingest(wh, tmp_path, _bars("ESH4", 0, [470.00, 470.25, 4702.50, 4702.75, 4703.00, 4703.25]))
    assert [(r["row"], r["rule"]) for r in bad] == [(2, "bad_tick_scale"), (3, "bad_tick_scale")]
    assert "10^-1" in bad[0]["detail"] and "reference close 4702.5" in bad[0]["detail"]


def test_a_tick_ten_times_too_high_inside_a_bar_is_caught(wh, tmp_path):
    # high/low = 47000 / 4700 = 10 -> log10 = 1: one bar mixing two scales, though its close is right.
    rows = _bars("ESH4", 0, [4700.00]) + ["ESH4,2024-01-02 15:01,4700.00,47000.00,4700.00,4700.25,10"] + _bars("ESH4", 2, [4700.50])
    report, [bad] = _ingest(wh, tmp_path, rows)
    assert (bad["row"], bad["rule"]) == (3, "bad_tick_scale") and "high/low = 10.0" in bad["detail"]


def test_a_one_bar_spike_that_reverts_is_quarantined(wh, tmp_path):
    # ln(5500 / 4700) = +0.1572 > 0.15; ln(4700.25 / 5500) = -0.1571 < -0.15; net ln(4700.25 / 4700) = 0.00005 < 0.075.
    report, [bad] = _ingest(wh, tmp_path, _bars("ESH4", 0, [4700.00, 4700.00, 5500.00, 4700.25, 4700.50]))
    assert (bad["row"], bad["rule"]) == (4, "bad_tick_spike")
    assert "+17.0%" in bad["detail"] and "reference close 4700" in bad["detail"]


def test_limit_moves_that_hold_and_gaps_across_sessions_load(wh, tmp_path):
    # +7% limit-up that holds: ln(5029 / 4700) = 0.0677, under any threshold.
    # +20% that holds: ln(5640 / 4700) = 0.182 > 0.15, but the next close stays (ln(5640.25 / 5640) ~ 0): no spike.
    # Weekend gap, Friday 20:59 UTC -> Sunday 23:00 UTC: -12%, ln(4963.25 / 5640.25) = -0.128, and it holds.
    rows = (_bars("ESH4", 0, [4700.00, 5029.00, 5029.25, 5640.00, 5640.25], day="2024-01-05")
            + ["ESH4,2024-01-05 20:59,5640.25,5640.25,5640.25,5640.25,10"]
            + ["ESH4,2024-01-07 23:00,4963.25,4963.25,4963.25,4963.25,10", "ESH4,2024-01-07 23:01,4963.50,4963.50,4963.50,4963.50,10"])
    report, bad = _ingest(wh, tmp_path, rows)
    assert bad == [] and report.rows_loaded == 8


def test_each_contract_and_product_is_its_own_series(wh, tmp_path):
    # ES near 4700 and NQ near 16800 interleaved minute by minute, and two ES contracts: no pair is compared.
    rows = []
    for i in range(4):
        rows += [f"ESH4,2024-01-02 15:0{i},{4700 + i},{4700 + i},{4700 + i},{4700 + i},1",
                 f"NQH4,2024-01-02 15:0{i},{16800 + i},{16800 + i},{16800 + i},{16800 + i},1",
                 f"6JH4,2024-01-02 15:0{i},0.0068{i}0,0.0068{i}0,0.0068{i}0,0.0068{i}0,1",
                 f"ESM4,2024-01-02 15:0{i},{4750 + i},{4750 + i},{4750 + i},{4750 + i},1"]
    report, bad = _ingest(wh, tmp_path, rows)
    assert bad == [] and report.rows_loaded == 16


def test_the_spike_limit_is_per_product_class(wh, tmp_path):
    # The same +28% one-bar excursion (ln(3.200 / 2.500) = 0.247): under energy's 0.35 for NG, over
    # equity index's 0.15 for ES.
    rows = [f"NGG4,2024-01-02 15:0{i},{c},{c},{c},{c},1" for i, c in enumerate(["2.500", "2.500", "3.200", "2.501", "2.502"])]
    rows += _bars("ESH4", 0, [2500.00, 2500.00, 3200.00, 2501.00, 2502.00])
    report, bad = _ingest(wh, tmp_path, rows)
    assert [(r["row"], r["rule"]) for r in bad] == [(9, "bad_tick_spike")]
    assert report.rows_loaded == 9


def test_the_real_es_bars_have_no_bad_ticks(wh):
    # Real CME ES bars (LEAN minute, hour, daily across several contracts and a roll) and Databento's
    # ohlcv samples shipped with the engine: the rule must not reject a single one.
    reports = ingest(wh, [LEAN / "minute", LEAN / "hour", LEAN / "daily", REPO / "engine" / "sample_data" / "databento"],
                     build_rolls=False)
    assert all(r.error is None for r in reports)
    assert sum(r.rows_loaded for r in reports) > 10_000
    rules = wh.sql("SELECT rule, count(*) AS n FROM quarantine GROUP BY rule").to_pylist()
    assert not [r for r in rules if r["rule"].startswith("bad_tick")], rules
