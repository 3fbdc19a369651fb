"""Live bars appended to the warehouse through ingest's validation, quarantine and atomic writes (engine/live/store.py)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from engine.live.bars import Bar, BarAggregator, bars_table
from engine.live.store import append_bars, last_stored_ts
from loaders.ingest import ingest
from tests.conftest import write_csv
from warehouse import layout
from warehouse.lock import LockTimeout, write_lock
from warehouse.rolls import build_rolls

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def minutes(*closes: float, start: int = 0, contract: str = "MESH6") -> pa.Table:
    """One-minute MES bars from T0 + ``start`` minutes, each opening at the previous close (O=H=L=C for the first)."""
    rows = []
    previous = closes[0]
    for k, close in enumerate(closes):
        rows.append(Bar("MES", contract, T0 + timedelta(minutes=start + k), previous, max(previous, close),
                        min(previous, close), close, 10 + k))
        previous = close
    return pa.table({
        "symbol": [b.root for b in rows], "contract": [b.contract for b in rows], "ts": [b.ts for b in rows],
        "open": [b.open for b in rows], "high": [b.high for b in rows], "low": [b.low for b in rows],
        "close": [b.close for b in rows], "volume": [b.volume for b in rows],
    })


def stored(wh) -> list[tuple]:
    return [tuple(r.values()) for r in wh.sql(
        "SELECT contract, strftime(ts, '%H:%M') AS t, close FROM contract_bars_1m ORDER BY contract, ts").to_pylist()]


def test_bars_land_in_a_day_file_and_show_in_the_views(wh) -> None:
    assert stored(wh) == []  # the views were registered while the warehouse held no bar
    report = append_bars(wh, minutes(5000.00, 5000.25, 5000.50), refresh=False)
    assert report.views_stale
    wh.refresh()
    assert report.rows_loaded == 3 and report.quarantined.num_rows == 0 and report.held.num_rows == 0
    assert report.stored["close"].to_pylist() == [5000.00, 5000.25, 5000.50]
    day_file = layout.live_bar_file(wh.root, "1m", "MES", T0.date())
    assert day_file.exists() and not day_file.with_name("data.parquet").exists()
    assert stored(wh) == [("MESH6", "15:00", 5000.00), ("MESH6", "15:01", 5000.25), ("MESH6", "15:02", 5000.50)]
    build_rolls(wh, symbols=["MES"])
    wh.refresh()
    assert wh.sql("SELECT count(*) AS n FROM bars_1m WHERE symbol = 'MES'")["n"].to_pylist() == [3]
    assert last_stored_ts(wh, "1m", "MES", "MESH6") == T0 + timedelta(minutes=2)

    again = append_bars(wh, minutes(5000.00, 5000.25, 5000.50).slice(2))  # 15:02 again, same values
    assert (again.rows_loaded, again.rows_unchanged) == (0, 1)
    assert again.stored.num_rows == 1
    later = append_bars(wh, minutes(5000.50, 5000.75, start=2).slice(1), refresh=False)
    assert not later.views_stale and len(stored(wh)) == 4  # a new file of a table with files shows at once


def test_a_bar_at_ten_times_the_price_is_quarantined_against_the_stored_series(wh) -> None:
    append_bars(wh, minutes(5000.00, 5000.25, 5000.50))
    bad = minutes(50005.00, start=3)  # a scale error: x10
    report = append_bars(wh, bad)
    assert report.stored.num_rows == 0
    assert report.quarantined["rule"].to_pylist() == ["bad_tick_scale"]
    assert wh.sql("SELECT rule, contract, ts FROM quarantine")["rule"].to_pylist() == ["bad_tick_scale"]
    assert len(stored(wh)) == 3


def test_off_tick_and_inconsistent_bars_are_quarantined_like_ingest(wh) -> None:
    bars = minutes(5000.00, 5000.10)  # 5000.10 is off the 0.25 tick grid
    report = append_bars(wh, bars)
    assert report.quarantined["rule"].to_pylist() == ["price_off_tick_grid"]
    assert report.stored["close"].to_pylist() == [5000.00]
    inconsistent = minutes(5000.25, start=5).set_column(4, "high", pa.array([4999.0]))  # high below the close
    assert append_bars(wh, inconsistent).quarantined["rule"].to_pylist() == ["ohlc_inconsistent"]


def test_a_spike_is_held_then_quarantined_and_a_real_move_is_stored_a_bar_late(wh) -> None:
    append_bars(wh, minutes(5000.00, 5000.25))
    jump = minutes(6000.00, start=2)  # +18 %: beyond the equity spike limit (15 % in log terms)
    first = append_bars(wh, jump)
    assert first.stored.num_rows == 0 and first.held["close"].to_pylist() == [6000.00]
    back = minutes(5000.50, start=3)
    second = append_bars(wh, pa.concat_tables([first.held, back]))
    assert second.quarantined["rule"].to_pylist() == ["bad_tick_spike"]
    assert second.stored["close"].to_pylist() == [5000.50]

    stays = append_bars(wh, minutes(6000.00, start=4))  # a real move: the next bar stays up
    assert stays.held.num_rows == 1
    confirmed = append_bars(wh, pa.concat_tables([stays.held, minutes(6000.25, start=5)]))
    assert confirmed.stored["close"].to_pylist() == [6000.00, 6000.25]
    assert confirmed.quarantined.num_rows == 0


def test_ingest_and_live_appends_keep_one_row_per_key(wh, tmp_path) -> None:
    path = write_csv(tmp_path / "bars.csv", "symbol,ts,open,high,low,close,volume", [
        "MESH6,2026-03-02 15:00,5000.00,5000.00,5000.00,5000.00,10",
        "MESH6,2026-03-02 15:01,5000.00,5000.25,5000.00,5000.25,11",
    ])
    ingest(wh, [path], timeframe="1m")
    # 15:01 is already in data.parquet with other values: the live bars replace it there, not in a day file
    report = append_bars(wh, minutes(5000.00, 5000.50, 5000.75).slice(1))
    assert report.rows_loaded == 2
    assert stored(wh) == [("MESH6", "15:00", 5000.00), ("MESH6", "15:01", 5000.50), ("MESH6", "15:02", 5000.75)]
    directory = layout.bar_partition(wh.root, "1m", "MES", 2026).parent
    assert layout.live_bar_files(directory) == []
    append_bars(wh, minutes(5000.75, 5001.00, start=2).slice(1))  # after data.parquet's last bar: a day file
    assert [p.name for p in layout.live_bar_files(directory)] == ["live-2026-03-02.parquet"]

    ingest(wh, [path], timeframe="1m")  # the next ingest of the partition folds the day files in
    assert layout.live_bar_files(directory) == []
    assert stored(wh) == [("MESH6", "15:00", 5000.00), ("MESH6", "15:01", 5000.25), ("MESH6", "15:02", 5000.75),
                          ("MESH6", "15:03", 5001.00)]


def test_the_append_waits_for_the_write_lock_and_writes_nothing_when_it_times_out(wh) -> None:
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with write_lock(wh.root):
            held.set()
            release.wait(10)

    other = threading.Thread(target=writer)
    other.start()
    try:
        held.wait(10)
        with pytest.raises(LockTimeout):
            append_bars(wh, minutes(5000.00), lock_timeout=0)
    finally:
        release.set()
        other.join()
    assert stored(wh) == []
    assert append_bars(wh, minutes(5000.00)).rows_loaded == 1


def test_aggregated_bars_append_directly(wh) -> None:
    agg = BarAggregator("1m")
    final = agg.add_many(Bar("MES", "MESH6", T0 + timedelta(seconds=5 * k), 5000.0, 5000.25, 5000.0, 5000.25, 1)
                         for k in range(24))
    final += agg.close_due(T0 + timedelta(minutes=3))
    report = append_bars(wh, bars_table(final))
    assert report.stored["volume"].to_pylist() == [12, 12]


def test_the_context_kept_between_appends_is_the_stored_series(wh) -> None:
    """Each append's context (the contract's last stored bars) is kept in memory between appends; it must be
    what the views hold before the new bar, bar after bar (the oracle: SQL over the views)."""
    from engine.live.store import _context

    closes = [5000.0 + 0.25 * k for k in range(45)]
    append_bars(wh, minutes(*closes[:3]))
    wh.refresh()
    for k in range(3, 45):
        new = minutes(*closes[k - 1:k + 1], start=k - 1).slice(1)
        seen = _context(wh.root, "1m", new.append_column("instrument_id", pa.nulls(1, pa.int64())), 32)
        want = wh.sql(f"SELECT close FROM contract_bars_1m WHERE ts < TIMESTAMPTZ '{new['ts'][0].as_py().isoformat()}' "
                      "ORDER BY ts DESC LIMIT 32")["close"].to_pylist()[::-1]
        assert seen["close"].to_pylist() == want
        assert append_bars(wh, new).rows_loaded == 1


def test_another_writers_correction_reaches_the_next_appends_context(wh, tmp_path) -> None:
    """The stored series is re-read when another process rewrote its files: ``qe ingest`` corrects the three
    bars to a tenfold price (a scale fix); a live bar at the corrected scale is then normal, not a bad tick."""
    append_bars(wh, minutes(5000.00, 5000.25, 5000.50))
    append_bars(wh, minutes(5000.50, 5000.75, start=2).slice(1))  # the context is now held in memory
    path = write_csv(tmp_path / "fix.csv", "symbol,ts,open,high,low,close,volume", [
        f"MESH6,2026-03-02 15:0{k},{50000 + 2.5 * k:.2f},{50000 + 2.5 * k:.2f},{50000 + 2.5 * k:.2f},{50000 + 2.5 * k:.2f},10"
        for k in range(4)])
    ingest(wh, [path], timeframe="1m")
    report = append_bars(wh, minutes(50007.50, 50010.00, start=3).slice(1))
    assert report.quarantined.num_rows == 0 and report.stored["close"].to_pylist() == [50010.00]


def test_the_day_file_is_read_back_from_disk_only_when_another_writer_replaced_it(wh, monkeypatch) -> None:
    """Each append merges into the day file it wrote last time, kept in memory (same inode, mtime and size);
    a file another writer replaced is read from disk, and its rows survive the next append."""
    import os

    import pyarrow.parquet as pq

    import engine.live.store as store

    reads: list[str] = []
    real_read = pq.read_table

    def counting_read(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        reads.append(Path(path).name)
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(store.pq, "read_table", counting_read)
    closes = [5000.0 + 0.25 * k for k in range(12)]
    append_bars(wh, minutes(*closes[:2]))
    day_file = layout.live_bar_file(wh.root, "1m", "MES", T0.date())
    for k in range(2, 10):
        append_bars(wh, minutes(*closes[k - 1:k + 1], start=k - 1).slice(1))
    assert day_file.name not in reads  # eight appends, the day file never read back
    wh.refresh()
    assert [c for _, _, c in stored(wh)] == closes[:10]

    # another writer corrects the first bar's close (a new file renamed over the old one, as every writer does)
    table = real_read(day_file)
    fixed = table.set_column(table.schema.get_field_index("close"), "close",
                             pa.array([4999.75] + table["close"].to_pylist()[1:], pa.float64()))
    temporary = day_file.with_name(".fix.parquet.tmp")
    pq.write_table(fixed, temporary)
    os.replace(temporary, day_file)
    append_bars(wh, minutes(*closes[9:11], start=9).slice(1))
    assert day_file.name in reads  # read from disk again (the merge; the validation's context too)
    wh.refresh()
    assert [c for _, _, c in stored(wh)] == [4999.75] + closes[1:11]
