"""Contract specs, date-effective margins/fees, symbols and expiries against hand-worked oracles."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from warehouse import contracts, sessions
from warehouse.contracts import (
    ContractId,
    contract_symbol,
    expiry_date,
    fee_per_side,
    fees_table,
    load_specs,
    margin_on,
    margins_table,
    parse_contract,
    root_of,
    specs_table,
)

ROOTS = ["ES", "NQ", "RTY", "YM", "MES", "MNQ", "CL", "NG", "GC", "SI", "ZB", "ZN", "ZF", "6E", "6J"]

# root: (tick_size, multiplier, tick_value, ib_exchange, venue) -- CME contract specs, by hand.
SPEC_ORACLE = {
    "ES": (0.25, 50, 12.50, "CME", "XCME"),
    "NQ": (0.25, 20, 5.00, "CME", "XCME"),
    "RTY": (0.10, 50, 5.00, "CME", "XCME"),
    "YM": (1.0, 5, 5.00, "CBOT", "XCBT"),
    "MES": (0.25, 5, 1.25, "CME", "XCME"),
    "MNQ": (0.25, 2, 0.50, "CME", "XCME"),
    "CL": (0.01, 1000, 10.00, "NYMEX", "XNYM"),
    "NG": (0.001, 10000, 10.00, "NYMEX", "XNYM"),
    "GC": (0.10, 100, 10.00, "COMEX", "XCEC"),
    "SI": (0.005, 5000, 25.00, "COMEX", "XCEC"),
    "ZB": (1 / 32, 1000, 31.25, "CBOT", "XCBT"),
    "ZN": (1 / 64, 1000, 15.625, "CBOT", "XCBT"),
    "ZF": (1 / 128, 1000, 7.8125, "CBOT", "XCBT"),
    "6E": (0.00005, 125000, 6.25, "CME", "XCME"),
    "6J": (0.0000005, 12500000, 6.25, "CME", "XCME"),
}

# root: (group, RTH open, RTH close) -- the feature catalog's RTH table.
GROUP_ORACLE = {
    **{r: ("equity_index", "09:30", "16:00") for r in ["ES", "NQ", "RTY", "YM", "MES", "MNQ"]},
    **{r: ("energy", "09:00", "14:30") for r in ["CL", "NG"]},
    **{r: ("metals", "08:20", "13:30") for r in ["GC", "SI"]},
    **{r: ("bonds", "08:20", "15:00") for r in ["ZB", "ZN", "ZF"]},
    **{r: ("currencies", "08:20", "15:00") for r in ["6E", "6J"]},
}


# ---------------------------------------------------------------------------------------------- specs


def test_roots_are_exactly_the_fifteen():
    assert list(load_specs()) == ROOTS


@pytest.mark.parametrize("root", ROOTS)
def test_spec_values(root):
    tick, mult, value, exchange, venue = SPEC_ORACLE[root]
    spec = load_specs()[root]
    assert spec.tick_size == pytest.approx(tick, rel=1e-12)
    assert spec.multiplier == mult
    assert spec.tick_value == pytest.approx(value, rel=1e-12)
    assert (spec.ib_exchange, spec.databento_venue, spec.databento_dataset) == (exchange, venue, "GLBX.MDP3")
    assert spec.currency == "USD"
    group, rth_open, rth_close = GROUP_ORACLE[root]
    assert spec.correlation_group == group
    assert spec.rth_open_et.strftime("%H:%M") == rth_open
    assert spec.rth_close_et.strftime("%H:%M") == rth_close


@pytest.mark.parametrize("root", ROOTS)
def test_tick_value_is_tick_size_times_multiplier(root):
    spec = load_specs()[root]
    assert math.isclose(spec.tick_value, spec.tick_size * spec.multiplier, rel_tol=1e-9)


def test_contract_months_and_rules():
    specs = load_specs()
    assert {r: specs[r].contract_months for r in ROOTS} == {
        **{r: "HMUZ" for r in ["ES", "NQ", "RTY", "YM", "MES", "MNQ", "ZB", "ZN", "ZF"]},
        **{r: "FGHJKMNQUVXZ" for r in ["CL", "NG", "GC", "SI", "6E", "6J"]},
    }
    assert specs["ES"].months == (3, 6, 9, 12)
    assert {specs[r].expiry_rule for r in ROOTS} == set(contracts.EXPIRY_RULES)


def test_spec_is_frozen_and_forbids_extra_fields():
    spec = load_specs()["ES"]
    with pytest.raises(Exception):
        spec.tick_size = 1.0  # type: ignore[misc]
    with pytest.raises(Exception):
        contracts.ContractSpec.model_validate({**spec.model_dump(), "extra": 1})


def test_specs_table_types():
    table = specs_table()
    assert table.num_rows == 15
    assert table.column_names == list(contracts.ContractSpec.model_fields)
    assert table.schema.field("tick_size").type == pa.float64()
    assert table.schema.field("rth_open_et").type == pa.time32("s")
    es = table.filter(pa.compute.equal(table["root"], "ES")).to_pylist()[0]
    assert es["tick_value"] == 12.5 and es["calendar"] == "CME Globex Equity"


def test_margins_and_fees_tables_types():
    margins = margins_table()
    assert margins.schema.field("effective_date").type == pa.date32()
    assert margins.schema.field("initial_margin").type == pa.float64()
    assert set(margins["root"].to_pylist()) == set(ROOTS)
    for row in margins.to_pylist():
        assert row["initial_margin"] >= row["maintenance_margin"] > 0
        assert "approx" in row["source"]
    fees = fees_table()
    assert fees.schema.field("effective_date").type == pa.date32()
    assert fees.column_names[-2:] == ["total_per_side", "currency"]
    for row in fees.to_pylist():
        parts = row["ib_commission"] + row["exchange_fee"] + row["regulatory_fee"]
        assert row["total_per_side"] == pytest.approx(parts)


# ------------------------------------------------------------------------------------------- margins/fees


def test_margin_on_both_sides_of_an_effective_date():
    assert margin_on("ES", date(2023, 12, 31)) == (4950.0, 4500.0)
    assert margin_on("ES", date(2024, 1, 1)) == (13750.0, 12500.0)
    assert margin_on("ES", "2013-01-01") == (4950.0, 4500.0)
    assert margin_on("MES", date(2019, 5, 6)) == (693.0, 630.0)
    with pytest.raises(KeyError, match="first effective date: 2013-01-01"):
        margin_on("ES", date(2012, 12, 31))
    with pytest.raises(KeyError, match="2019-05-06"):
        margin_on("MES", date(2019, 5, 3))


def test_lookups_refuse_unknown_roots_and_datetimes():
    with pytest.raises(KeyError, match="unknown root 'XX'"):
        margin_on("XX", date(2024, 1, 2))
    with pytest.raises(KeyError, match="unknown root"):
        fee_per_side("XX", date(2024, 1, 2))
    with pytest.raises(TypeError, match="trading date"):
        margin_on("ES", datetime(2024, 1, 2, tzinfo=timezone.utc))


def test_fee_per_side():
    assert fee_per_side("ES", date(2024, 6, 3)) == pytest.approx(0.85 + 1.38 + 0.02)
    assert fee_per_side("MES", date(2024, 6, 3)) == pytest.approx(0.25 + 0.35 + 0.02)
    assert fee_per_side("6J", date(2013, 1, 1)) == pytest.approx(0.85 + 1.60 + 0.02)
    with pytest.raises(KeyError, match="no fee schedule for RTY"):
        fee_per_side("RTY", date(2017, 7, 7))


# ------------------------------------------------------------------------------------------- validation


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch):
    """Point the loader at a copy of the data files that a test may corrupt."""
    real = Path(contracts.__file__).parent / "data"
    (tmp_path / "data").mkdir()
    for name in ("contracts.csv", "margins.csv", "fees.csv"):
        (tmp_path / "data" / name).write_text((real / name).read_text())
    monkeypatch.setattr(contracts.resources, "files", lambda package: tmp_path)
    _clear_caches()
    yield tmp_path / "data"
    monkeypatch.undo()
    _clear_caches()


def _clear_caches():
    for cached in (contracts._specs, contracts._margins, contracts._fees, contracts._roots_longest_first,
                   contracts.expiry_date, sessions._sessions_in_year, sessions._business_days_in_year):
        cached.cache_clear()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_bad_tick_value_names_file_line_and_column(data_dir):
    _edit(data_dir / "contracts.csv", "USD,0.25,12.5,50", "USD,0.25,12.4,50")
    with pytest.raises(ValueError, match=r"contracts\.csv, line 2 \(root 'ES'\), column 'tick_value'"):
        load_specs()


def test_tick_value_tolerance_is_relative_1e9(data_dir):
    _edit(data_dir / "contracts.csv", "USD,0.25,12.5,50", "USD,0.25,12.5000000001,50")  # rel 8e-12: fine
    assert load_specs()["ES"].tick_value == 12.5000000001


@pytest.mark.parametrize(
    ("old", "new", "column"),
    [
        (",09:30,16:00,equity_index", ",9:30,16:00,equity_index", "rth_open_et"),
        ("ES,E-mini S&P 500,CME,GLBX.MDP3,XCME", "ES,E-mini S&P 500,CME,GLBX.MDP3,XCBT", "databento_venue"),
        ("HMUZ,third_friday,CME Globex Equity\nNQ", "HMZU,third_friday,CME Globex Equity\nNQ", "contract_months"),
        ("HMUZ,third_friday,CME Globex Equity\nNQ", "HMUZ,fourth_friday,CME Globex Equity\nNQ", "expiry_rule"),
        ("HMUZ,third_friday,CME Globex Equity\nNQ", "HMUZ,third_friday,CMEGlobex_Equity\nNQ", "calendar"),
        ("USD,0.25,12.5,50", "USD,-0.25,12.5,50", "tick_size"),
        ("USD,0.25,12.5,50", "USD,,12.5,50", "tick_size"),
    ],
)
def test_bad_values_name_their_column(data_dir, old, new, column):
    _edit(data_dir / "contracts.csv", old, new)
    with pytest.raises(ValueError, match=rf"contracts\.csv, line 2 \(root 'ES'\), column '{column}'"):
        load_specs()


def test_duplicate_root_and_bad_header(data_dir):
    path = data_dir / "contracts.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(ValueError, match=r"line 17, column 'root': duplicate root 'ES'"):
        load_specs()
    _clear_caches()
    path.write_text(path.read_text().replace("tick_value", "tickvalue", 1))
    with pytest.raises(ValueError, match=r"contracts\.csv: header .*missing \['tick_value'\]"):
        load_specs()


def test_bad_margin_rows(data_dir):
    _edit(data_dir / "margins.csv", "ES,2013-01-01,4950,4500", "ES,2013-01-01,4000,4500")
    with pytest.raises(ValueError, match=r"margins\.csv, line 2 \(root 'ES'\), column 'initial_margin'"):
        margin_on("ES", date(2013, 6, 3))
    _clear_caches()
    _edit(data_dir / "margins.csv", "ES,2013-01-01,4000,4500", "ES,2013/01/01,4950,4500")
    with pytest.raises(ValueError, match=r"column 'effective_date'"):
        margin_on("ES", date(2013, 6, 3))
    _clear_caches()
    _edit(data_dir / "margins.csv", "ES,2013/01/01,4950,4500", "ES,2024-01-01,4950,4500")
    with pytest.raises(ValueError, match=r"line 3 \(root 'ES'\), column 'effective_date': 2024-01-01 repeated"):
        margin_on("ES", date(2013, 6, 3))


def test_fee_row_for_unknown_root(data_dir):
    _edit(data_dir / "fees.csv", "6J,2013-01-01", "6X,2013-01-01")
    with pytest.raises(ValueError, match=r"fees\.csv, line 16 \(root '6X'\), column 'root': not in contracts\.csv"):
        fees_table()


# ------------------------------------------------------------------------------------------- symbols


@pytest.mark.parametrize(
    ("symbol", "root"),
    [
        ("ES", "ES"), ("ESZ3", "ES"), ("ESZ13", "ES"), ("ES.v.0", "ES"), ("ES.c.0", "ES"), ("ES.n.1", "ES"),
        ("MES", "MES"), ("MESZ4", "MES"), ("MNQH5", "MNQ"), ("NQH5", "NQ"), ("RTYZ3", "RTY"),
        ("6EH4", "6E"), ("6JZ3", "6J"), ("ZNZ3", "ZN"), ("ZBH24", "ZB"), ("CLF4", "CL"), ("NG.c.12", "NG"),
        ("ESX", None), ("AAPL", None), ("ESZ", None), ("ESZ123", None), ("ESA3", None), ("esz3", None),
        ("ESZ3 ", None), ("", None), ("E", None), ("ES.v.x", None), ("ES.x.0", None), ("ESZ3-ESH4", None),
        ("MESX", None), ("6E.v", None),
    ],
)
def test_root_of(symbol, root):
    assert root_of(symbol) == root


def test_root_of_non_string():
    assert root_of(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("symbol", "ref", "expected"),
    [
        ("ESZ3", date(2013, 12, 2), ContractId("ES", 12, 2013)),
        ("ESH4", date(2013, 12, 2), ContractId("ES", 3, 2014)),
        ("ESZ13", date(2023, 6, 1), ContractId("ES", 12, 2013)),  # two digits: 2000 + yy, no inference
        ("MESZ4", date(2024, 1, 2), ContractId("MES", 12, 2024)),
        ("CLF4", date(2013, 12, 19), ContractId("CL", 1, 2014)),
        ("6EH4", date(2013, 12, 2), ContractId("6E", 3, 2014)),
        ("ESZ3", date(2014, 1, 5), ContractId("ES", 12, 2013)),  # one month of grace after expiry
        ("ESU3", date(2014, 1, 5), ContractId("ES", 9, 2023)),  # beyond the grace: next decade
        ("ESH3", date(2013, 12, 15), ContractId("ES", 3, 2013)),  # not 2023: nothing lists 10 years out
        ("ESZ3", date(2019, 6, 1), ContractId("ES", 12, 2023)),
        ("ESH0", date(2019, 12, 31), ContractId("ES", 3, 2020)),  # decade boundary
        ("ESZ9", date(2020, 1, 15), ContractId("ES", 12, 2019)),  # grace across the decade boundary
        ("ESH9", date(2020, 1, 15), ContractId("ES", 3, 2029)),
    ],
)
def test_parse_contract(symbol, ref, expected):
    assert parse_contract(symbol, ref) == expected


@pytest.mark.parametrize("symbol", ["ES", "ES.v.0", "AAPL", "ESX", "ESZ123"])
def test_parse_contract_non_contracts(symbol):
    assert parse_contract(symbol, date(2013, 12, 2)) is None


def test_contract_symbol():
    assert contract_symbol("ES", 2013, 12) == "ESZ3"
    assert contract_symbol("6E", 2024, 3) == "6EH4"
    assert contract_symbol("CL", 2030, 1) == "CLF0"
    assert contract_symbol("HG", 2021, 7) == "HGN1"  # formatting only: any root
    for bad in [("ES", 2013, 13), ("ES", 2013, 0), ("es", 2013, 12), ("", 2013, 12)]:
        with pytest.raises(ValueError):
            contract_symbol(*bad)


def test_contract_symbol_round_trips_through_parse():
    ref = date(2013, 12, 2)
    for root in ("ES", "CL", "6J"):
        for year in range(2013, 2023):
            for month in load_specs()[root].months:
                if (year, month) >= (2013, 11):
                    assert parse_contract(contract_symbol(root, year, month), ref) == (root, month, year)


# ------------------------------------------------------------------------------------------- expiries


@pytest.mark.parametrize(
    ("root", "year", "month", "last_trade"),
    [
        # The brief's known dates.
        ("ES", 2013, 12, date(2013, 12, 20)),
        ("ES", 2014, 3, date(2014, 3, 21)),
        ("ES", 2021, 3, date(2021, 3, 19)),
        ("CL", 2024, 1, date(2023, 12, 19)),  # 25th (Mon) is Christmas: 3 bd before Fri 22nd
        ("CL", 2024, 2, date(2024, 1, 22)),  # 25th (Thu) is a business day: 3 bd before it
        ("NG", 2024, 1, date(2023, 12, 27)),  # Jan 1 holiday; Dec 29, 28, 27
        ("GC", 2023, 12, date(2023, 12, 27)),
        ("SI", 2023, 12, date(2023, 12, 27)),
        ("ZN", 2023, 12, date(2023, 12, 19)),  # last bd Dec 29; 7 bd back skipping Christmas
        ("ZB", 2023, 12, date(2023, 12, 19)),
        ("ZF", 2023, 12, date(2023, 12, 29)),
        ("6E", 2023, 12, date(2023, 12, 18)),  # 3rd Wednesday Dec 20
        ("6J", 2023, 12, date(2023, 12, 18)),
        # Holidays decide.
        ("ES", 2008, 3, date(2008, 3, 20)),  # 3rd Friday is Good Friday: CME expired it Thursday
        ("MES", 2026, 6, date(2026, 6, 18)),  # 3rd Friday is Juneteenth 2026
        ("NG", 2019, 12, date(2019, 11, 26)),  # Thanksgiving is not a business day; the Friday after is
        ("NG", 2024, 12, date(2024, 11, 26)),
        ("6E", 2023, 6, date(2023, 6, 16)),  # Juneteenth Monday skipped
        ("ZN", 2024, 3, date(2024, 3, 19)),  # Good Friday Mar 29 closed: last bd Mar 28
        ("CL", 2025, 2, date(2025, 1, 21)),  # 25th Saturday; MLK Jan 20 skipped
        ("GC", 2024, 3, date(2024, 3, 26)),  # Good Friday Mar 29: bds 28, 27, 26
    ],
)
def test_expiry_date(root, year, month, last_trade):
    assert expiry_date(root, year, month) == last_trade


def test_expiry_is_a_business_and_trading_day():
    for root in ROOTS:
        for year in (2013, 2020, 2024):
            for month in load_specs()[root].months:
                day = expiry_date(root, year, month)
                assert day in sessions.business_days(root, day, day)
                assert sessions.is_trading_day(root, day)


def test_expiry_rejects_unlisted_months_and_unknown_roots():
    with pytest.raises(ValueError, match="lists months HMUZ"):
        expiry_date("ES", 2024, 1)
    with pytest.raises(KeyError, match="unknown root"):
        expiry_date("XX", 2024, 3)
