"""Databento download: cost and confirmation, resume, data-quality flags, errors, ingest, key hygiene.

No network: a fake :class:`HistoricalSource` writes real (zstd-compressed) DBN bytes built offline, so
the chunks go through the real decoder, the real ingest and a real DuckDB warehouse.
"""

from __future__ import annotations

import io
import json
import logging
import traceback
import warnings
from datetime import date, datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import zstandard
from databento.common.error import BentoClientError, BentoServerError, BentoWarning
from rich.console import Console

from tests.dbn_fixtures import NS_PER_DAY, continuous_definitions, continuous_ohlcv, ns
from loaders.download import DatabentoClient, DownloadPlan, HistoricalSource, run_download
from warehouse.errors import ConfigError, QEError
from warehouse.warehouse import Warehouse

ES_H4, ES_M4 = 5002, 5003
COST_PER_CHUNK = 1.25
SECRET = "db-TESTKEYa1b2c3d4e5f6g7h8i9j0SECRET"


def _bar(iid: int, when: str, price: float, volume: int = 10) -> tuple[int, int, float, float, float, float, int]:
    return (iid, ns(when), price, price + 0.5, price - 0.25, price + 0.25, volume)


#: Bars the fake "exchange" holds. February is all ESH4; March rolls from ESH4 to ESM4 on 2024-03-14.
BARS_1M = [
    _bar(ES_H4, "2024-02-15T14:30", 5000.00),
    _bar(ES_H4, "2024-02-15T14:31", 5000.25),
    _bar(ES_H4, "2024-02-15T14:32", 5000.50),
    _bar(ES_H4, "2024-03-13T14:30", 5100.00),
    _bar(ES_H4, "2024-03-13T14:31", 5100.25),
    _bar(ES_M4, "2024-03-14T14:30", 5150.00, 40),
    _bar(ES_M4, "2024-03-14T14:31", 5150.75, 41),
]
DEFINITIONS = [(ES_H4, "ESH4", "2024-03-15T13:30"), (ES_M4, "ESM4", "2024-06-21T13:30")]


class FakeSource:
    """A :class:`HistoricalSource` that answers from :data:`BARS_1M` and records every call."""

    def __init__(self, conditions=None, fail_on_call=None, warn=None, error=None, bars=None, condition_error=None):  # noqa: ANN001
        self.conditions = conditions or []
        self.bars = BARS_1M if bars is None else bars  # what the "exchange" serves now
        self.condition_error = condition_error  # exception raised by get_dataset_condition
        self.fail_on_call = fail_on_call  # 1-based get_range call that crashes (once)
        self.warn = warn  # message of a BentoWarning emitted by every get_range
        self.error = error  # exception raised by every get_range
        self.cost_calls: list[tuple] = []
        self.range_calls: list[tuple] = []

    def get_cost(self, dataset, symbols, schema, start, end, stype_in):  # noqa: ANN001, ANN201
        self.cost_calls.append((dataset, tuple(symbols), schema, start, end, stype_in))
        return COST_PER_CHUNK

    def get_dataset_condition(self, dataset, start_date, end_date):  # noqa: ANN001, ANN201
        if self.condition_error is not None:
            raise self.condition_error
        return [c for c in self.conditions if start_date <= c["date"] <= end_date]

    def get_range(self, dataset, symbols, schema, start, end, stype_in, stype_out, path):  # noqa: ANN001, ANN201
        self.range_calls.append((dataset, tuple(symbols), schema, start, end, stype_in, stype_out))
        assert not Path(path).exists(), "get_range must write to a fresh temporary path"
        if self.fail_on_call == len(self.range_calls):
            self.fail_on_call = None
            Path(path).write_bytes(b"\x28\xb5\x2f\xfd partial")  # a half-written stream, then the crash
            raise ConnectionResetError("connection lost mid-download")
        if self.error is not None:
            raise self.error
        if self.warn:
            warnings.warn(self.warn, BentoWarning, stacklevel=2)
        lo, hi = ns(start), ns(end)
        (symbol,) = symbols
        if schema == "definition":
            days = [(date.fromisoformat(start), date.fromisoformat(end), ES_H4)]
            data = continuous_definitions(DEFINITIONS, symbol=symbol, mappings=days, start=lo, end=hi)
        else:
            bars = [b for b in self.bars if lo <= b[1] < hi]
            data = continuous_ohlcv(bars, symbol=symbol, schema=schema, start=lo, end=hi)
        Path(path).write_bytes(zstandard.ZstdCompressor().compress(data))


def _console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=200)


def _output(console: Console) -> str:
    return console.file.getvalue()


def _plan(**kwargs) -> DownloadPlan:  # noqa: ANN003
    args = {"roots": ["es"], "start": "2024-02-15", "end": "2024-04-01", "schemas": ["ohlcv-1m"], "rank": 0, "roll_rule": "v"}
    args.update(kwargs)
    return DownloadPlan.create(**args)


# -- plan -----------------------------------------------------------------------------------------------
def test_plan_chunks_by_root_schema_and_month() -> None:
    plan = _plan(roots=["ES", "nq", "ES"], schemas=["ohlcv-1m", "definition"], roll_rule="C", rank=1)
    assert plan.roots == ("ES", "NQ") and plan.symbol("NQ") == "NQ.c.1"
    got = [(c.root, c.schema, c.month, str(c.start), str(c.end)) for c in plan.chunks]
    assert got[:4] == [
        ("ES", "definition", "2024-02", "2024-02-15", "2024-03-01"),
        ("ES", "definition", "2024-03", "2024-03-01", "2024-04-01"),
        ("ES", "ohlcv-1m", "2024-02", "2024-02-15", "2024-03-01"),
        ("ES", "ohlcv-1m", "2024-03", "2024-03-01", "2024-04-01"),
    ]
    assert len(got) == 8
    assert plan.chunks[0].path(Path("/w")) == Path("/w/downloads/ES/definition/2024-02.dbn.zst")
    assert isinstance(FakeSource(), HistoricalSource)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"roots": ["XX"]}, "unknown root(s) XX"),
        ({"roots": []}, "no roots"),
        ({"schemas": ["trades"]}, "unsupported schema(s) trades"),
        ({"start": "2024-04-01"}, "must be before end"),
        ({"start": "2024-13-01"}, "start must be a date"),
        ({"rank": -1}, "rank must be an integer >= 0"),
        ({"roll_rule": "x"}, "unknown roll rule 'x'"),
    ],
)
def test_plan_rejects_bad_values_in_one_line(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        _plan(**kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


# -- cost and confirmation --------------------------------------------------------------------------------
def test_cost_is_shown_and_refusal_downloads_nothing(wh: Warehouse) -> None:
    source, console, asked = FakeSource(), _console(), []

    def refuse(message: str) -> bool:
        asked.append(message)
        return False

    with pytest.raises(QEError, match="download cancelled"):
        run_download(wh, source, _plan(), confirm=refuse, console=console)
    assert asked == ["Download 2 chunks for $2.50?"]
    assert "$2.50" in _output(console)
    assert [c[1:] for c in source.cost_calls] == [
        (("ES.v.0",), "ohlcv-1m", "2024-02-15", "2024-03-01", "continuous"),
        (("ES.v.0",), "ohlcv-1m", "2024-03-01", "2024-04-01", "continuous"),
    ]
    assert source.range_calls == []
    assert not (wh.root / "downloads").exists()


def test_confirm_none_downloads_and_ingests_bars_rolls_and_contracts(wh: Warehouse) -> None:
    source, console = FakeSource(), _console()
    summary = run_download(wh, source, _plan(schemas=["ohlcv-1m", "definition"]), confirm=None, console=console)

    assert (summary.chunks_total, summary.chunks_downloaded, summary.chunks_skipped) == (4, 4, 0)
    assert summary.cost_usd == pytest.approx(4 * COST_PER_CHUNK)
    assert summary.rows_loaded == len(BARS_1M) and summary.ingest_errors == []
    # Definitions are fetched (and ingested) before bars so that bars are named by their contract.
    assert [c[2] for c in source.range_calls] == ["definition", "definition", "ohlcv-1m", "ohlcv-1m"]
    assert all(c[5:] == ("continuous", "instrument_id") for c in source.range_calls)
    # Each chunk file has its sidecar: the conditions it was downloaded under.
    assert sorted(p.relative_to(wh.root).as_posix() for p in (wh.root / "downloads").rglob("*") if p.is_file()) == [
        f"downloads/ES/{schema}/{month}.dbn.zst{sidecar}"
        for schema in ("definition", "ohlcv-1m")
        for month in ("2024-02", "2024-03")
        for sidecar in ("", ".json")
    ]

    bars = wh.sql(
        "SELECT contract, count(*) AS n, min(open) AS lo, max(close) AS hi FROM contract_bars_1m "
        "WHERE symbol = 'ES' GROUP BY contract ORDER BY contract"
    ).to_pylist()
    assert bars == [
        {"contract": "ESH4", "n": 5, "lo": 5000.0, "hi": 5100.5},
        {"contract": "ESM4", "n": 2, "lo": 5150.0, "hi": 5151.0},
    ]
    changes = wh.sql(
        "SELECT symbol, continuous_symbol, ts, from_instrument_id, to_instrument_id FROM instrument_changes"
    ).to_pylist()
    assert len(changes) == 1
    change = changes[0]
    assert (change["symbol"], change["continuous_symbol"]) == ("ES", "ES.v.0")
    assert (change["from_instrument_id"], change["to_instrument_id"]) == (ES_H4, ES_M4)
    assert change["ts"].isoformat() == "2024-03-14T14:30:00+00:00"
    assert "Downloaded 4 chunk(s)" in _output(console)


# -- resume -------------------------------------------------------------------------------------------------
def test_resume_after_a_crash_downloads_only_missing_chunks(wh: Warehouse) -> None:
    source = FakeSource(fail_on_call=2)
    with pytest.raises(ConnectionResetError):
        run_download(wh, source, _plan(), confirm=None, console=_console())
    done = wh.root / "downloads/ES/ohlcv-1m"
    assert sorted(p.name for p in done.iterdir()) == ["2024-02.dbn.zst", "2024-02.dbn.zst.json"], "a crash mid-chunk leaves no file behind"

    asked: list[str] = []
    summary = run_download(wh, source, _plan(), confirm=lambda m: asked.append(m) or True, console=_console())
    assert asked == ["Download 1 chunks for $1.25?"]
    assert [c[3] for c in source.range_calls] == ["2024-02-15", "2024-03-01", "2024-03-01"]
    assert (summary.chunks_downloaded, summary.chunks_skipped) == (1, 1)
    # The chunk saved before the crash was never ingested then; the resumed run ingests it too.
    assert summary.files_ingested == 2
    assert wh.sql("SELECT count(*) AS n FROM contract_bars_1m").to_pylist() == [{"n": len(BARS_1M)}]

    # A third run has nothing to pay for, asks nothing, and reads nothing again.
    again = run_download(wh, source, _plan(), confirm=lambda m: pytest.fail("asked again"), console=_console())
    assert (again.chunks_downloaded, again.chunks_skipped, again.files_ingested, again.cost_usd) == (0, 2, 0, 0.0)
    assert len(source.range_calls) == 3


def test_a_chunk_file_of_another_request_is_not_taken_as_done(wh: Warehouse) -> None:
    run_download(wh, FakeSource(), _plan(end="2024-03-01"), confirm=None, console=_console())
    other = FakeSource()
    summary = run_download(wh, other, _plan(end="2024-03-01", roll_rule="c"), confirm=None, console=_console())
    assert summary.chunks_downloaded == 1 and other.range_calls[0][1] == ("ES.c.0",)


# -- data quality -------------------------------------------------------------------------------------------
def test_degraded_pending_and_missing_days_land_in_data_quality(wh: Warehouse) -> None:
    conditions = [
        {"date": "2024-02-15", "condition": "available", "last_modified_date": "2024-02-16"},
        {"date": "2024-02-16", "condition": "degraded", "last_modified_date": "2024-02-20"},
        {"date": "2024-03-05", "condition": "missing", "last_modified_date": None},
        {"date": "2024-03-29", "condition": "pending", "last_modified_date": "2024-03-29"},
    ]
    plan = _plan(roots=["ES", "NQ"])
    summary = run_download(wh, FakeSource(conditions=conditions), plan, confirm=None, console=_console())
    rows = wh.sql(
        "SELECT dataset, symbol, schema_name, CAST(date AS VARCHAR) AS day, condition, detail FROM data_quality "
        "WHERE condition <> 'warning' ORDER BY day, symbol"
    ).to_pylist()
    assert [(r["symbol"], r["day"], r["condition"]) for r in rows] == [
        ("ES", "2024-02-16", "degraded"),
        ("NQ", "2024-02-16", "degraded"),
        ("ES", "2024-03-05", "missing"),
        ("NQ", "2024-03-05", "missing"),
        ("ES", "2024-03-29", "pending"),
        ("NQ", "2024-03-29", "pending"),
    ]
    assert {r["dataset"] for r in rows} == {"GLBX.MDP3"} and {r["schema_name"] for r in rows} == {"ohlcv-1m"}
    assert "NQ.v.0" in rows[1]["detail"] and "last modified 2024-02-20" in rows[1]["detail"]
    assert summary.flags_recorded == 6
    assert len(list((wh.root / "data_quality").glob("*.parquet"))) == 1, "one file per plan"


def test_bento_warning_during_download_becomes_a_flag_not_a_crash(wh: Warehouse) -> None:
    message = "Degraded: GLBX.MDP3 data for 2024-03-05 is degraded"
    with warnings.catch_warnings():
        warnings.simplefilter("error", BentoWarning)  # would crash if the warning escaped
        summary = run_download(wh, FakeSource(warn=message), _plan(), confirm=None, console=_console())
    assert summary.chunks_downloaded == 2 and summary.flags_recorded == 2
    flags = wh.sql(
        "SELECT CAST(date AS VARCHAR) AS day, condition, detail FROM data_quality ORDER BY day"
    ).to_pylist()
    assert [(f["day"], f["condition"]) for f in flags] == [("2024-02-15", "warning"), ("2024-03-01", "warning")]
    assert all(message in f["detail"] and "ES.v.0 ohlcv-1m" in f["detail"] for f in flags)

    # Warnings survive later runs of the same plan (the chunks are not fetched, so not warned about, again).
    run_download(wh, FakeSource(), _plan(), confirm=None, console=_console())
    assert wh.sql("SELECT count(*) AS n FROM data_quality WHERE condition = 'warning'").to_pylist() == [{"n": 2}]


def _flags(wh: Warehouse) -> list[tuple[str, str, str]]:
    rows = wh.sql("SELECT symbol, CAST(date AS VARCHAR) AS day, condition FROM data_quality ORDER BY day, symbol").to_pylist()
    return [(r["symbol"], r["day"], r["condition"]) for r in rows]


def _shifted(bars: list, since: str, by: float) -> list:
    """The same bars with prices moved by ``by`` from ``since`` on (a revised download)."""
    return [(i, t, o + by, h + by, lo + by, c + by, v) if t >= ns(since) else (i, t, o, h, lo, c, v) for i, t, o, h, lo, c, v in bars]


def test_a_revised_day_is_fetched_again_and_its_flag_follows_the_stored_bars(wh: Warehouse) -> None:
    degraded = [{"date": "2024-03-13", "condition": "degraded", "last_modified_date": "2024-03-14"}]
    run_download(wh, FakeSource(conditions=degraded), _plan(), confirm=None, console=_console())
    assert _flags(wh) == [("ES", "2024-03-13", "degraded")]

    # Databento repairs the day (available, modified later) and now serves other prices for March.
    repaired = [{"date": "2024-03-13", "condition": "available", "last_modified_date": "2024-04-02"}]
    revised = _shifted(BARS_1M, "2024-03-01", 100.0)

    # Until the chunk is actually fetched again, the flag stays: the stored bars are still the degraded ones.
    with pytest.raises(QEError, match="HTTP 503"):
        run_download(wh, FakeSource(conditions=repaired, error=BentoServerError(503, message="busy")), _plan(), console=_console())
    assert _flags(wh) == [("ES", "2024-03-13", "degraded")]

    source, console, asked = FakeSource(conditions=repaired, bars=revised), _console(), []
    summary = run_download(wh, source, _plan(), confirm=lambda m: asked.append(m) or True, console=console)
    assert asked == ["Download 1 chunks for $1.25?"], "a re-download is priced and confirmed like any other"
    assert [c[3:5] for c in source.range_calls] == [("2024-03-01", "2024-04-01")]
    assert (summary.chunks_downloaded, summary.chunks_refetched, summary.chunks_skipped, summary.files_ingested) == (1, 1, 1, 1)
    said = " ".join(_output(console).split())  # rich wraps long lines
    assert "2024-03-13 degraded (modified 2024-03-14) -> available (modified 2024-04-02)" in said
    # The new file has the old path, so the ingest replaced what the old one loaded: new prices, old ones gone.
    opens = [r["open"] for r in wh.sql("SELECT open FROM contract_bars_1m ORDER BY ts").to_pylist()]
    assert opens == [5000.0, 5000.25, 5000.5, 5200.0, 5200.25, 5250.0, 5250.75]
    # The flag row is gone (only days whose stored bars are not available have rows), and the sidecar says why.
    assert _flags(wh) == []
    record = json.loads((wh.root / "downloads/ES/ohlcv-1m/2024-03.dbn.zst.json").read_text())
    assert record["conditions"]["2024-03-13"] == {"condition": "available", "last_modified_date": "2024-04-02"}

    # Nothing changed: nothing is fetched, asked about or ingested.
    third = FakeSource(conditions=repaired, bars=revised)
    again = run_download(wh, third, _plan(), confirm=lambda m: pytest.fail("asked again"), console=_console())
    assert third.range_calls == [] and (again.chunks_skipped, again.files_ingested, again.cost_usd) == (2, 0, 0.0)
    assert _flags(wh) == []


def test_a_sidecar_that_is_not_the_files_own_does_not_count(wh: Warehouse) -> None:
    degraded = [{"date": "2024-03-13", "condition": "degraded", "last_modified_date": "2024-03-14"}]
    run_download(wh, FakeSource(conditions=degraded), _plan(), confirm=None, console=_console())
    # A crash between the sidecar of a re-download and the rename: new record, old (degraded) file.
    sidecar = wh.root / "downloads/ES/ohlcv-1m/2024-03.dbn.zst.json"
    record = json.loads(sidecar.read_text())
    today = datetime.now(timezone.utc).date().isoformat()
    record.update(sha256="0" * 64, conditions={"2024-03-13": {"condition": "available", "last_modified_date": today}})
    sidecar.write_text(json.dumps(record))

    source = FakeSource(conditions=[{"date": "2024-03-13", "condition": "available", "last_modified_date": today}])
    summary = run_download(wh, source, _plan(), confirm=None, console=_console())
    assert [c[3] for c in source.range_calls] == ["2024-03-01"] and summary.chunks_refetched == 1
    assert _flags(wh) == []


def test_a_failed_condition_check_falls_back_to_the_file_rule(wh: Warehouse) -> None:
    console = _console()
    blind = FakeSource(condition_error=ConnectionError("Max retries exceeded\nwith url /v0/metadata.get_dataset_condition"))
    summary = run_download(wh, blind, _plan(), confirm=None, console=console)
    said = [line for line in _output(console).splitlines() if "could not check the dataset condition" in line]
    assert len(said) == 1 and "ConnectionError: Max retries exceeded; with url" in said[0] and "file rule" in said[0]
    assert summary.chunks_downloaded == 2 and not summary.conditions_checked

    # Checked again: February was not modified since its download, so it is kept and adopts today's
    # conditions (its degraded day is flagged); a March day modified today may postdate the file: fetched again.
    today = datetime.now(timezone.utc).date().isoformat()
    conditions = [
        {"date": "2024-02-16", "condition": "degraded", "last_modified_date": "2024-02-20"},
        {"date": "2024-03-13", "condition": "available", "last_modified_date": today},
    ]
    checked = FakeSource(conditions=conditions)
    summary = run_download(wh, checked, _plan(), confirm=None, console=_console())
    assert [c[3] for c in checked.range_calls] == ["2024-03-01"] and summary.conditions_checked
    assert _flags(wh) == [("ES", "2024-02-16", "degraded")]

    # Blind again: files on disk count as done, and the flags of the stored bars stay.
    third = FakeSource(condition_error=QEError("cannot reach Databento (ConnectTimeout: timed out)"))
    again = run_download(wh, third, _plan(), confirm=lambda m: pytest.fail("asked"), console=_console())
    assert third.range_calls == [] and again.chunks_skipped == 2
    assert _flags(wh) == [("ES", "2024-02-16", "degraded")]


# -- errors ---------------------------------------------------------------------------------------------------
def test_422_symbology_error_is_a_one_line_qeerror(wh: Warehouse) -> None:
    body = {
        "detail": {
            "case": "symbology_invalid_request",
            "message": "None of the symbols could be resolved",
            "docs": "https://databento.com/docs/standards-and-conventions/symbology",
        }
    }
    source = FakeSource(error=BentoClientError(422, json_body=body, message="unprocessable"))
    with pytest.raises(QEError) as info:
        run_download(wh, source, _plan(), confirm=None, console=_console())
    text = str(info.value)
    assert "\n" not in text
    assert "could not resolve ES.v.0 for 2024-02-15..2024-03-01" in text
    assert "422" in text and "None of the symbols could be resolved" in text
    assert list((wh.root / "downloads/ES/ohlcv-1m").iterdir()) == []


def test_server_error_names_status_and_message(wh: Warehouse) -> None:
    source = FakeSource(error=BentoServerError(503, message="Service Unavailable"))
    with pytest.raises(QEError, match=r"Databento download for ES\.v\.0 ohlcv-1m .* failed: HTTP 503: Service Unavailable"):
        run_download(wh, source, _plan(), confirm=None, console=_console())


# -- the Databento client and its key ---------------------------------------------------------------------------
def test_missing_key_says_how_to_set_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABENTO_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QEError, match=r"set DATABENTO_API_KEY .* \.env file"):
        DatabentoClient.from_environment()


def test_key_from_dotenv_does_not_override_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"DATABENTO_API_KEY={SECRET}\n")
    monkeypatch.delenv("DATABENTO_API_KEY", raising=False)
    assert DatabentoClient.from_environment()._historical._key == SECRET
    import os

    assert "DATABENTO_API_KEY" not in os.environ, ".env is read without exporting the key"
    monkeypatch.setenv("DATABENTO_API_KEY", "db-FROMENVIRONMENT")
    assert DatabentoClient.from_environment()._historical._key == "db-FROMENVIRONMENT"


def test_client_forwards_arguments_to_databento(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABENTO_API_KEY", SECRET)
    client = DatabentoClient.from_environment()
    calls: dict[str, dict] = {}
    client._historical = SimpleNamespace(
        metadata=SimpleNamespace(
            get_cost=lambda **kw: calls.setdefault("cost", kw) and 0.5,
            get_dataset_condition=lambda **kw: calls.setdefault("cond", kw) and [{"date": "2024-01-02", "condition": "available"}],
        ),
        timeseries=SimpleNamespace(get_range=lambda **kw: calls.setdefault("range", kw)),
    )
    assert client.get_cost("GLBX.MDP3", ["ES.v.0"], "ohlcv-1m", "2024-01-01", "2024-02-01", "continuous") == 0.5
    assert client.get_dataset_condition("GLBX.MDP3", "2024-01-01", "2024-01-31")[0]["condition"] == "available"
    client.get_range("GLBX.MDP3", ["ES.v.0"], "ohlcv-1m", "2024-01-01", "2024-02-01", "continuous", "instrument_id", Path("/x/y.tmp"))
    assert calls["cost"] == {
        "dataset": "GLBX.MDP3", "symbols": ["ES.v.0"], "schema": "ohlcv-1m",
        "start": "2024-01-01", "end": "2024-02-01", "stype_in": "continuous",
    }
    assert calls["cond"] == {"dataset": "GLBX.MDP3", "start_date": "2024-01-01", "end_date": "2024-01-31"}
    assert calls["range"]["path"] == "/x/y.tmp" and calls["range"]["stype_out"] == "instrument_id"


def test_api_key_never_appears_in_output_or_errors(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DATABENTO_API_KEY", SECRET)
    client = DatabentoClient.from_environment()
    assert SECRET not in repr(client) and SECRET not in str(client)

    def leaky(**kwargs):  # noqa: ANN003, ANN202 - an error whose text quotes the key
        raise BentoClientError(401, message=f"Authentication failed for key {SECRET}")

    client._historical = SimpleNamespace(metadata=SimpleNamespace(get_cost=leaky, get_dataset_condition=leaky))
    console = _console()
    with pytest.raises(QEError) as info:
        run_download(wh, client, _plan(), confirm=None, console=console)
    # What a user can see: the message, and the traceback that --debug prints (the leaky cause is suppressed).
    seen = [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))]
    captured = capsys.readouterr()
    for text in [*seen, _output(console), captured.out, captured.err, caplog.text]:
        assert SECRET not in text
        assert SECRET[3:15] not in text  # not even partially
    assert "401" in str(info.value)

    # databento's own "invalid API key, was <key>" message is replaced as well.
    with pytest.raises(QEError) as bad:
        DatabentoClient("   ")
    assert bad.value.__cause__ is None


def test_fixture_header_carries_the_request_range() -> None:
    # Sanity of the fixture the fake relies on: the header carries the request range (resume check).
    import databento as db

    data = continuous_ohlcv(BARS_1M[:1], start=ns("2024-02-15"), end=ns("2024-03-01"))
    metadata = db.DBNStore.from_bytes(data).metadata
    assert (metadata.start, metadata.end) == (ns("2024-02-15"), ns("2024-02-15") + 15 * NS_PER_DAY)
