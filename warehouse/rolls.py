"""Roll tables and front-contract segments, computed from per-contract bars.

Rules
-----
``volume``
    The front contract rolls to a later-expiring contract on the first trading date whose volume exceeds
    the front's (a crossover). The roll takes effect at the open of the **next** trading session, because a
    day's volume is known only once the day is over: no look-ahead.
``open_interest``
    The same with the day's last open interest.
``expiry:N``
    Roll N business days (of the product's exchange calendar) before the front's last trading day; the
    roll takes effect at the open of that day's session.
``databento``
    Take the front-contract changes recorded in continuous DBN files (a change of ``instrument_id``);
    the roll takes effect at the first bar of the new instrument. A root with no continuous (rank 0) DBN
    file has no evidence for this rule: asked for explicitly, it is refused for that root (its roll table is
    left as it was, the other roots are built, then :class:`~warehouse.errors.MissingEvidenceError` names the
    refused roots); a root that was last built with it and has lost its evidence falls back to the default.

Whatever the rule, a front that has expired is replaced by the next contract that has data, and the
front never moves back to an earlier expiry. ``from_price`` / ``to_price`` are both contracts' closes on
their latest common bar that had closed by the roll (see ``sql/roll_prices.sql``); when the contracts
share no bar (e.g. a data gap) the old contract's last close and the new contract's first open are used
and ``basis_timeframe`` says ``adjacent``; across a gap of more than four days no adjustment is made (``gap``).

Back adjustment of segment k (rolls k+1..K follow it): ratio factor = prod(to_j / from_j) and difference
offset = sum(to_j - from_j) over those later rolls, so the newest contract keeps its raw prices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pyarrow as pa

from warehouse import layout, schemas
from warehouse.errors import ConfigError, MissingEvidenceError
from warehouse.lock import holds_write_lock
from warehouse.store import write_parquet_if_changed
from warehouse.templates import render
from warehouse.warehouse import Warehouse

ET = ZoneInfo("America/New_York")
RULES = ("volume", "open_interest", "expiry", "databento")


@dataclass(frozen=True)
class Roll:
    """One roll from ``from_contract`` to ``to_contract``, effective at ``roll_ts``."""

    symbol: str
    roll_ts: datetime
    signal_date: date
    from_contract: str
    to_contract: str
    rule: str


def front_contracts(warehouse: Warehouse, roots: list[str], at: datetime | None = None) -> dict[str, str]:
    """The front contract of each root from the roll table's front segments (what a live run trades).

    Parameters
    ----------
    roots : list of str
    at : datetime, optional
        The moment (UTC) whose front is wanted: the latest segment with ``valid_from <= at`` (the first
        segment has no ``valid_from``); default: the latest segment (the front after the last stored bar).

    Raises
    ------
    ConfigError
        A root without front segments (no bars, or rolls not built), naming what to run.
    """
    rows = warehouse.sql(
        # the first segment's valid_from is NULL: it holds from the first bar on
        "SELECT symbol, arg_max(contract, coalesce(valid_from, TIMESTAMPTZ '0001-01-01 00:00:00+00')) AS contract "
        "FROM front_segments WHERE list_contains($roots, symbol) "
        "AND ($at IS NULL OR valid_from IS NULL OR valid_from <= $at) GROUP BY symbol",
        {"roots": list(roots), "at": at},
    ).to_pylist()
    found = {r["symbol"]: r["contract"] for r in rows}
    missing = [r for r in roots if r not in found]
    if missing:
        raise ConfigError(f"no front contract for {', '.join(missing)}"
                          f"{' at ' + at.isoformat() if at else ''}: ingest its bars and run qe rolls build, "
                          "or name the contract explicitly")
    return found


def parse_rule(rule: str) -> tuple[str, int]:
    """Split ``expiry:5`` into ("expiry", 5); other rules carry no number."""
    name, _, number = rule.partition(":")
    if name not in RULES:
        raise ConfigError(f"unknown roll rule {rule!r}; choose volume, open_interest, expiry:N or databento")
    if name == "expiry":
        if not number.isdigit():
            raise ConfigError(f"roll rule {rule!r}: write expiry:N with N business days before expiry, e.g. expiry:5")
        return name, int(number)
    return name, 0


def session_open_utc(trading_day: date) -> datetime:
    """Open of the CME Globex session of ``trading_day``: 18:00 ET on the previous calendar day, in UTC."""
    local = datetime.combine(trading_day - timedelta(days=1), time(18, 0), tzinfo=ET)
    return local.astimezone(timezone.utc)


@holds_write_lock
def build_rolls(warehouse: Warehouse, symbols: list[str] | None = None, rule: str | None = None) -> pa.Table:
    """Recompute rolls and front segments for ``symbols`` (all futures symbols by default).

    Parameters
    ----------
    warehouse : Warehouse
        The warehouse to read bars from and write ``rolls`` / ``front_segments`` to.
    symbols : list of str, optional
        Roots to rebuild; plain (contract-less) symbols are skipped.
    rule : str, optional
        ``volume``, ``open_interest``, ``expiry:N`` or ``databento``. Defaults to the rule the symbol was
        last built with, else ``databento`` when continuous DBN changes exist for it, else ``volume``.

    Returns
    -------
    pyarrow.Table
        The roll rows written, over all symbols.

    Raises
    ------
    MissingEvidenceError
        ``rule`` is ``databento`` and some roots have no continuous DBN file; they are left as they were and
        named in the message, every other root is built first (the error carries their rows as ``built``).
    """
    if rule is not None:
        parse_rule(rule)
    available = [r[0] for r in warehouse.connect().sql(_symbols_with_contracts_sql()).fetchall()]
    chosen = available if symbols is None else [s for s in symbols if s in available]
    written: list[pa.Table] = []
    refused: list[str] = []
    for symbol in chosen:
        symbol_rule = rule or _previous_rule(warehouse, symbol) or _default_rule(warehouse, symbol)
        if parse_rule(symbol_rule)[0] == "databento" and not _has_continuous_files(warehouse, symbol):
            if rule is not None:
                # Without instrument changes every bar would stay with the first contract: the continuous
                # series would silently shrink to one contract. Refuse and keep what this root had.
                refused.append(symbol)
                continue
            symbol_rule = _default_rule(warehouse, symbol)
        instruments = _instruments(warehouse, symbol)
        expiries = {r["contract"]: r["expiry"] for r in instruments.to_pylist() if r["expiry"] is not None}
        rolls_table, front = _build_symbol(warehouse, symbol, symbol_rule, expiries)
        write_parquet_if_changed(instruments, warehouse.root / "instruments" / f"{layout.safe_name(symbol)}.parquet")
        write_parquet_if_changed(rolls_table, warehouse.root / "rolls" / f"{layout.safe_name(symbol)}.parquet")
        write_parquet_if_changed(front, warehouse.root / "front_segments" / f"{layout.safe_name(symbol)}.parquet")
        written.append(rolls_table)
    warehouse.refresh()
    built = pa.concat_tables(written) if written else schemas.ROLLS.empty_table()
    if refused:
        raise MissingEvidenceError(
            f"roll rule databento needs continuous DBN files (e.g. ES.v.0) and there are none for "
            f"{', '.join(refused)}; their roll tables were left as they were. Ingest continuous DBN files for "
            f"them, or use --rule volume|open_interest|expiry:N",
            refused,
            built,
        )
    return built


def _instruments(warehouse: Warehouse, symbol: str) -> pa.Table:
    """The ``instruments`` rows of ``symbol`` (see ``sql/instruments.sql``)."""
    from warehouse.contracts import expiry_date, parse_contract

    con = warehouse.connect()
    # The earliest bar over every timeframe dates a single-digit contract year (ESZ3 seen in 2013 -> 2013).
    every = _over_timeframes("SELECT contract, ts FROM contract_bars_{tf} WHERE symbol = $s AND contract IS NOT NULL")
    seen = con.sql(f"SELECT contract, min(ts) FROM ({every}) GROUP BY contract", params={"s": symbol}).fetchall()
    rule: dict[str, date] = {}
    for contract, first_ts in seen:
        parsed = parse_contract(contract, first_ts.date()) if "#" not in contract else None
        if parsed is not None:
            try:
                rule[contract] = expiry_date(parsed.root, parsed.year, parsed.month)
            except (KeyError, ValueError):
                pass
    con.register("rule_expiries", pa.table({"contract": list(rule), "expiry": pa.array(list(rule.values()), pa.date32())}))
    try:
        rows = con.sql(render("instruments.sql", timeframes=list(layout.TIMEFRAMES)), params={"symbol": symbol}).to_arrow_table()
    finally:
        con.unregister("rule_expiries")
    return rows.cast(schemas.INSTRUMENTS)


def _over_timeframes(select: str, keyword: str = "UNION ALL") -> str:
    """``select`` (with a ``{tf}`` placeholder for ``contract_bars_{tf}``) repeated over every stored timeframe."""
    return f" {keyword} ".join(select.format(tf=tf) for tf in layout.TIMEFRAMES)


def _symbols_with_contracts_sql() -> str:
    return _over_timeframes("SELECT DISTINCT symbol FROM contract_bars_{tf} WHERE contract IS NOT NULL", "UNION") + " ORDER BY 1"


def _previous_rule(warehouse: Warehouse, symbol: str) -> str | None:
    row = warehouse.connect().sql("SELECT any_value(rule) FROM front_segments WHERE symbol = ?", params=[symbol]).fetchone()
    return row[0] if row else None


def _has_continuous_files(warehouse: Warehouse, symbol: str) -> bool:
    """Whether a continuous DBN file of the front (rank 0, e.g. ``ES.v.0``) was ingested for ``symbol``.

    A file whose front never changed is evidence too (no roll in its span), so runs count, not changes.
    """
    row = warehouse.connect().sql(
        "SELECT count(*) FROM instrument_runs WHERE symbol = ? AND continuous_symbol LIKE '%.0'", params=[symbol]
    ).fetchone()
    return bool(row and row[0] > 0)


def _default_rule(warehouse: Warehouse, symbol: str) -> str:
    row = warehouse.connect().sql("SELECT count(*) FROM instrument_changes WHERE symbol = ?", params=[symbol]).fetchone()
    return "databento" if row and row[0] > 0 else "volume"


def _basis_timeframe(warehouse: Warehouse, symbol: str) -> str:
    """Timeframe whose bars cover the most trading dates of ``symbol`` (coarser wins ties)."""
    best, best_days = "1d", -1
    for tf in ("1d", "1h", "1m", "1s"):
        days = warehouse.connect().sql(
            f"SELECT count(DISTINCT CAST(timezone('America/New_York', ts) + INTERVAL 6 HOUR AS DATE)) "
            f"FROM contract_bars_{tf} WHERE symbol = ? AND contract IS NOT NULL",
            params=[symbol],
        ).fetchone()[0]
        if days > best_days:
            best, best_days = tf, days
    return best


def _build_symbol(warehouse: Warehouse, symbol: str, rule: str, expiries: dict[str, date]) -> tuple[pa.Table, pa.Table]:
    name, days_before = parse_rule(rule)
    con = warehouse.connect()
    basis = _basis_timeframe(warehouse, symbol)
    sql = render("daily_activity.sql", timeframe=basis, seconds=layout.TIMEFRAMES[basis])
    activity = con.sql(sql, params={"symbol": symbol}).fetchall()
    if name == "databento":
        rolls = _databento_rolls(warehouse, symbol)
        first = _first_contract(activity, expiries)
    else:
        first, rolls = _decide(symbol, rule, name, days_before, activity, expiries)
    return _tables(warehouse, symbol, rule, first, rolls)


def _first_contract(activity: list[tuple], expiries: dict[str, date]) -> str | None:
    if not activity:
        return None
    first_day = activity[0][1]
    today = [r for r in activity if r[1] == first_day]
    return max(today, key=lambda r: (r[2] or 0, -_expiry_key(r[0], expiries)))[0]


def _expiry_key(contract: str, expiries: dict[str, date]) -> float:
    exp = expiries.get(contract)
    return exp.toordinal() if exp else math.inf


def _decide(
    symbol: str, rule: str, name: str, days_before: int, activity: list[tuple], expiries: dict[str, date]
) -> tuple[str | None, list[Roll]]:
    """Walk the trading dates in order and roll per ``rule`` (see the module docstring)."""
    from warehouse.sessions import business_days

    by_day: dict[date, dict[str, tuple[int, int | None]]] = {}
    known_at: dict[date, datetime] = {}
    for contract, day, volume, oi, seen in activity:
        by_day.setdefault(day, {})[contract] = (volume, oi)
        if seen is not None:
            known_at[day] = max(known_at.get(day, seen), seen)
    days = sorted(by_day)
    if not days:
        return None, []
    first = front = _first_contract(activity, expiries)
    rolls: list[Roll] = []
    pending_from: date | None = None  # a roll decided on a day takes effect at the next session
    for day in days:
        if pending_from is not None and day <= pending_from:
            continue
        today = by_day[day]
        front_exp = expiries.get(front)
        later = [c for c in today if c != front and _expiry_key(c, expiries) > _expiry_key(front, expiries)]
        target = None
        effective: date | None = None
        if front_exp is not None and day > front_exp and later:
            # The front has expired: take the next expiry that trades. Choosing by today's volume would
            # use figures not known at today's open (and could skip a contract for good).
            target = min(later, key=lambda c: _expiry_key(c, expiries))
            effective = day
        elif name in ("volume", "open_interest") and later:
            measure = 0 if name == "volume" else 1
            # A day without the front's own figure (a data gap) decides nothing.
            front_value = today[front][measure] if front in today else None
            rivals = [c for c in later if front_value is not None and (today[c][measure] or 0) > front_value]
            if rivals:
                target = max(rivals, key=lambda c: today[c][measure] or 0)
                effective = _first_session_after(symbol, day, known_at.get(day), business_days)
        elif name == "expiry" and later and front_exp is not None:
            roll_day = _business_days_before(symbol, front_exp, days_before, business_days)
            if day >= roll_day:
                target = min(later, key=lambda c: _expiry_key(c, expiries))
                effective = max(roll_day, day)
        if target is None or effective is None:
            continue
        signal = day if name != "expiry" else effective
        rolls.append(Roll(symbol, session_open_utc(effective), signal, front, target, rule))
        front = target
        pending_from = effective - timedelta(days=1)
    return first, rolls


def _first_session_after(symbol: str, day: date, known_at: datetime | None, business_days) -> date:  # noqa: ANN001
    """First business day after ``day`` whose session opens once the day's figures are known.

    For session bars the day is known at 17:00 ET and the next session opens at 18:00 ET. A vendor's
    UTC-day bar of ``day`` is complete only at 00:00 UTC (19:00/20:00 ET), after that open, so the roll
    waits one more session: no look-ahead.
    """
    following = [d for d in business_days(symbol, day + timedelta(days=1), day + timedelta(days=14)) if d > day]
    for candidate in following:
        if known_at is None or session_open_utc(candidate) >= known_at:
            return candidate
    return day + timedelta(days=1)


def _business_days_before(symbol: str, day: date, n: int, business_days) -> date:  # noqa: ANN001
    window = [d for d in business_days(symbol, day - timedelta(days=n * 2 + 14), day) if d <= day]
    return window[-1 - n] if len(window) > n else day - timedelta(days=n)


def _databento_rolls(warehouse: Warehouse, symbol: str) -> list[Roll]:
    """Rolls from the instrument changes of continuous DBN files, named by the contracts of the bars."""
    bars = _over_timeframes("SELECT DISTINCT instrument_id, contract FROM contract_bars_{tf} WHERE symbol = $symbol", "UNION")
    rows = warehouse.connect().sql(
        f"""
        WITH named AS ({bars})
        SELECT c.ts, f.contract AS from_contract, t.contract AS to_contract
        FROM instrument_changes AS c
        LEFT JOIN named AS f ON f.instrument_id = c.from_instrument_id
        LEFT JOIN named AS t ON t.instrument_id = c.to_instrument_id
        WHERE c.symbol = $symbol AND c.continuous_symbol LIKE '%.0'  -- rank 0 is the front
        ORDER BY c.ts
        """,
        params={"symbol": symbol},
    ).fetchall()
    out: list[Roll] = []
    for ts, from_contract, to_contract in rows:
        if from_contract is None or to_contract is None or from_contract == to_contract:
            continue
        day = (ts.astimezone(ET) + timedelta(hours=6)).date()
        out.append(Roll(symbol, ts, day, from_contract, to_contract, "databento"))
    return out


def _tables(warehouse: Warehouse, symbol: str, rule: str, first: str | None, rolls: list[Roll]) -> tuple[pa.Table, pa.Table]:
    """The roll rows (with prices) and the front segments with their back-adjustment factors."""
    con = warehouse.connect()
    price_sql = render("roll_prices.sql", timeframes=layout.TIMEFRAMES)
    rows = []
    for roll in rolls:
        params = {"symbol": symbol, "from_contract": roll.from_contract, "to_contract": roll.to_contract, "roll_ts": roll.roll_ts}
        hit = con.sql(price_sql, params=params).fetchone()
        if hit is not None:
            timeframe, price_ts, from_price, to_price = hit
        else:
            timeframe, price_ts, from_price, to_price = _adjacent_prices(con, symbol, roll)
        rows.append(
            {
                "symbol": symbol,
                "roll_ts": roll.roll_ts,
                "roll_date": (roll.roll_ts.astimezone(ET) + timedelta(hours=6)).date(),
                "signal_date": roll.signal_date,
                "from_contract": roll.from_contract,
                "to_contract": roll.to_contract,
                "from_price": from_price,
                "to_price": to_price,
                "price_ts": price_ts,
                "rule": rule,
                "basis_timeframe": timeframe,
            }
        )
    rolls_table = pa.Table.from_pylist(rows, schema=schemas.ROLLS)
    segments = []
    contracts = [first] + [r.to_contract for r in rolls] if first is not None else []
    bounds = [None] + [r.roll_ts for r in rolls] + [None]
    for k, contract in enumerate(contracts):
        later = rows[k:]
        ratio = math.prod((r["to_price"] / r["from_price"]) for r in later if _usable(r))
        offset = sum((r["to_price"] - r["from_price"]) for r in later if _usable(r))
        segments.append(
            {
                "symbol": symbol,
                "contract": contract,
                "valid_from": bounds[k],
                "valid_to": bounds[k + 1],
                "ratio_factor": ratio,
                "diff_offset": offset,
                "rule": rule,
            }
        )
    return rolls_table, pa.Table.from_pylist(segments, schema=schemas.FRONT)


def _usable(row: dict) -> bool:
    return row["from_price"] is not None and row["to_price"] is not None and row["from_price"] > 0


#: Longest gap between the old contract's last bar and the new one's first bar for which their prices
#: still measure the roll spread; across a longer gap they would also hold the market's move in between.
MAX_ADJACENT_GAP = timedelta(days=4)


def _adjacent_prices(con, symbol: str, roll: Roll) -> tuple[str, None, float | None, float | None]:  # noqa: ANN001
    """Fallback prices when the two contracts share no bar: last close before, first open after the roll.

    Returns basis ``adjacent``, or ``gap`` with no prices (so no adjustment) when the bars are too far apart.
    """
    union = _over_timeframes("SELECT contract, ts, open, close FROM contract_bars_{tf} WHERE symbol = $s")
    before = con.sql(
        f"SELECT arg_max(close, ts), max(ts) FROM ({union}) WHERE contract = $c AND ts < $t",
        params={"s": symbol, "c": roll.from_contract, "t": roll.roll_ts},
    ).fetchone()
    after = con.sql(
        f"SELECT arg_min(open, ts), min(ts) FROM ({union}) WHERE contract = $c AND ts >= $t",
        params={"s": symbol, "c": roll.to_contract, "t": roll.roll_ts},
    ).fetchone()
    if before[1] is None or after[1] is None or after[1] - before[1] > MAX_ADJACENT_GAP:
        return "gap", None, None, None
    return "adjacent", None, before[0], after[0]
