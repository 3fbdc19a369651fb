"""Signal generators: SQL templates over ``features_<tf>`` that output a signal in [-1, 1] and a sized target.

Each generator is one Jinja template ``sql/signals/<name>.sql`` whose header declares it::

    {#- signal
    name: momentum
    class: MomentumSignalGenerator
    order: 1
    description: multi-timeframe momentum ...
    uses: momentum, mean_reversion                         (optional: generators it composes)
    param  | short | int in 1,5,15,60,240 | 5 | short lookback in bars ...
    output | ret_short | double | logret_<short>
    -#}

``param`` lines are ``param | name | type | default | description`` with type ``int``, ``double``, ``bool`` or
``str``, optionally restricted to a list (``int in 1,5,15,60,240``); ``output`` lines are the audit columns
the generator adds (``output | name | int|double | description``). The sizing parameters every generator
takes are declared once, in the header of ``sql/signals/_common.sql`` (``{#- signal-sizing``); a generator
that ``uses`` others takes their parameters too, as ``<generator>.<name>`` (recursively:
``volatility_regime.momentum.short`` for the composite). Unknown parameter names are an error.

A rendered generator is one SELECT (usable as a backtest query) returning, per bar (ordered by ts, symbol)::

    symbol, ts, open, high, low, close, volume, contract     the raw front-contract bar (bars_<tf>)
    signal    DOUBLE in [-1, 1], NULL during warm-up
    target    INTEGER contracts after sizing (NULL where signal is NULL)
    multiplier, sizing_vol, vol_scale                        the sizing inputs
    <outputs declared in the header>                         the inputs the signal used

The registry checks every rendered query: projections equal to the declared columns in order, and the
look-ahead lint of :mod:`warehouse.features.lint` (no LEAD, no FOLLOWING frames, no joins to later rows).

API: :func:`registry`, :func:`signal_query`, :func:`build_signals`, :func:`signals_relation`; the command line
(``qe signals list | params | show | build``) is :mod:`engine.cli.signals`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from engine.core.params import Param as SignalParam
from warehouse.errors import QEError
from warehouse.lock import holds_write_lock

__all__ = [
    "BASE_COLUMNS",
    "SIZING_COLUMNS",
    "TIMEFRAMES",
    "SignalBuildReport",
    "SignalGenerator",
    "SignalOutput",
    "SignalParam",
    "SignalRegistry",
    "build_signals",
    "generator",
    "registry",
    "signal_query",
    "signals_dir",
    "signals_relation",
]

#: Timeframes with materialized features.
TIMEFRAMES = ("1m", "1h", "1d")
#: Columns every generator query starts with (a backtest query: bars, then signal and target).
BASE_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume", "contract", "signal", "target")
#: Sizing inputs that follow them.
SIZING_COLUMNS = ("multiplier", "sizing_vol", "vol_scale")

_HEADER = re.compile(r"\{#-?\s*(?P<kind>signal(?:-sizing)?)\s*\n(?P<body>.*?)-?#\}", re.DOTALL)
_KEYS = ("name", "class", "order", "description", "uses")
_TYPES = ("int", "double", "bool", "str")
_SYMBOL = re.compile(r"^[A-Za-z0-9._-]+$")
_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")


# -- header ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalOutput:
    """One declared audit column of a generator."""

    name: str
    type: str
    description: str


@dataclass(frozen=True)
class _Header:
    kind: str
    keys: dict[str, str]
    params: tuple[SignalParam, ...]
    outputs: tuple[SignalOutput, ...]


def _parse_value(kind: str, text: str, where: str) -> Any:
    try:
        if kind == "int":
            return int(text)
        if kind == "double":
            return float(text)
        if kind == "bool":
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        return text
    except ValueError:
        raise QEError(f"{where}: {text!r} is not a {kind}") from None


def parse_header(template: str, text: str) -> _Header:
    """The declaration at the top of a signal template; a malformed header is an error naming file and line."""
    match = _HEADER.search(text)
    if match is None:
        raise QEError(f"sql/{template}: no '{{#- signal ... #}}' header")
    first_line = text[: match.start("body")].count("\n") + 1
    keys: dict[str, str] = {}
    params: list[SignalParam] = []
    outputs: list[SignalOutput] = []
    for offset, raw in enumerate(match.group("body").splitlines()):
        line = raw.strip()
        where = f"sql/{template}:{first_line + offset}"
        if not line:
            continue
        head = line.split(":", 1)[0].strip()
        if head in _KEYS and not line.startswith(("param", "output")):
            keys[head] = line.split(":", 1)[1].strip()
            continue
        kind_of_line = line.split("|", 1)[0].strip()
        # The description (last column) may itself contain '|' (|signal|).
        parts = [p.strip() for p in line.split("|", 4 if kind_of_line == "param" else 3)]
        if parts[0] == "param":
            if len(parts) != 5:
                raise QEError(f"{where}: expected 'param | name | type | default | description', got {line!r}")
            _, name, kind, default, description = parts
            choices = None
            if " in " in kind:
                kind, allowed = (x.strip() for x in kind.split(" in ", 1))
                if kind not in _TYPES:
                    raise QEError(f"{where}: type of {name} must be one of {', '.join(_TYPES)}, not {kind!r}")
                choices = tuple(_parse_value(kind, a.strip(), where) for a in allowed.split(","))
            if kind not in _TYPES:
                raise QEError(f"{where}: type of {name} must be one of {', '.join(_TYPES)}, not {kind!r}")
            if not _IDENT.match(name):
                raise QEError(f"{where}: parameter name {name!r} is not a lower-case identifier")
            value = _parse_value(kind, default, where)
            if choices is not None and value not in choices:
                raise QEError(f"{where}: default of {name} ({value!r}) is not one of its allowed values")
            params.append(SignalParam(name, kind, value, description, choices))
        elif parts[0] == "output":
            if len(parts) != 4:
                raise QEError(f"{where}: expected 'output | name | type | description', got {line!r}")
            _, name, kind, description = parts
            if kind not in ("int", "double"):
                raise QEError(f"{where}: type of output {name} must be int or double, not {kind!r}")
            outputs.append(SignalOutput(name, kind, description))
        else:
            raise QEError(f"{where}: expected '<key>: value', 'param | ...' or 'output | ...', got {line!r}")
    names = [p.name for p in params]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise QEError(f"sql/{template}: parameter(s) declared twice: {', '.join(sorted(dup))}")
    return _Header(match.group("kind"), keys, tuple(params), tuple(outputs))


# -- registry -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalGenerator:
    """One generator, as its template header declares it."""

    name: str
    class_name: str
    description: str
    template: str
    order: int
    uses: tuple[str, ...]
    params: tuple[SignalParam, ...]
    outputs: tuple[SignalOutput, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column of the rendered query, in order."""
        return (*BASE_COLUMNS, *SIZING_COLUMNS, *(o.name for o in self.outputs))

    def query(self, timeframe: str = "1m", symbols: list[str] | None = None,
              params: Mapping[str, Any] | None = None) -> str:
        return signal_query(self.name, timeframe, symbols, params)

    def build(self, wh: Any, timeframe: str = "1m", symbols: list[str] | None = None,
              params: Mapping[str, Any] | None = None) -> SignalBuildReport:
        return build_signals(wh, self.name, timeframe, symbols, params)


@dataclass
class SignalRegistry:
    """Every generator (in header ``order``) and the sizing parameters they all take."""

    generators: dict[str, SignalGenerator]
    sizing: tuple[SignalParam, ...]

    def get(self, name: str) -> SignalGenerator:
        """A generator by name (``momentum``) or class name (``MomentumSignalGenerator``)."""
        if name in self.generators:
            return self.generators[name]
        for gen in self.generators.values():
            if gen.class_name == name:
                return gen
        raise QEError(f"unknown signal generator {name!r}; known: {', '.join(self.generators)} (see qe signals list)")

    def parameters(self, name: str, sizing: bool = True) -> dict[str, SignalParam]:
        """Every parameter ``name`` accepts, flat: its own, ``<used>.<param>`` of what it uses, the sizing ones."""
        gen = self.get(name)
        out: dict[str, SignalParam] = {p.name: p for p in gen.params}
        for used in gen.uses:
            for key, param in self.parameters(used, sizing=False).items():
                out[f"{used}.{key}"] = param
        if sizing:
            for param in self.sizing:
                out[param.name] = param
        return out

    def resolve(self, name: str, params: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(flat, nested) parameter values: defaults with ``params`` on top, typed; unknown names are an error."""
        gen = self.get(name)
        declared = self.parameters(gen.name)
        flat = {key: p.default for key, p in declared.items()}
        label = f"signal generator {gen.name!r} ({gen.class_name})"
        unknown = sorted(k for k in (params or {}) if k not in declared)
        if unknown:
            raise QEError(
                f"{label}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(declared)} "
                f"(see qe signals params {gen.name})"
            )
        for key, value in (params or {}).items():
            flat[key] = declared[key].coerce(value, label)
        nested: dict[str, Any] = {}
        for key, value in flat.items():
            *path, leaf = key.split(".")
            node = nested
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value
        return flat, nested


def _templates() -> list[tuple[str, str]]:
    folder = resources.files("sql").joinpath("signals")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(f"signals/{n}", folder.joinpath(n).read_text(encoding="utf-8")) for n in names]


def build_registry(templates: list[tuple[str, str]] | None = None) -> SignalRegistry:
    """The registry from the headers of ``templates`` (default: the shipped ``sql/signals/*.sql``)."""
    generators: list[SignalGenerator] = []
    sizing: tuple[SignalParam, ...] | None = None
    for template, text in templates or _templates():
        header = parse_header(template, text)
        if header.kind == "signal-sizing":
            if sizing is not None:
                raise QEError(f"sql/{template}: a second signal-sizing header")
            sizing = header.params
            continue
        missing = [k for k in ("name", "class", "order", "description") if k not in header.keys]
        if missing:
            raise QEError(f"sql/{template}: header lacks {', '.join(missing)}")
        name = header.keys["name"]
        if Path(template).stem != name:
            raise QEError(f"sql/{template}: header name {name!r} differs from the file name")
        uses = tuple(u.strip() for u in header.keys.get("uses", "").split(",") if u.strip())
        clash = {p.name for p in header.params} & set(uses)
        if clash:
            raise QEError(f"sql/{template}: parameter name(s) {', '.join(sorted(clash))} clash with a used generator")
        outputs = [o.name for o in header.outputs]
        taken = set(BASE_COLUMNS) | set(SIZING_COLUMNS)
        if taken & set(outputs) or len(set(outputs)) != len(outputs):
            raise QEError(f"sql/{template}: outputs repeat a column or reuse one of {', '.join(sorted(taken))}")
        try:
            order = int(header.keys["order"])
        except ValueError:
            raise QEError(f"sql/{template}: order must be an integer") from None
        generators.append(SignalGenerator(name, header.keys["class"], header.keys["description"], template, order,
                                          uses, header.params, header.outputs))
    if sizing is None:
        raise QEError("sql/signals: no '{#- signal-sizing ... #}' header (sql/signals/_common.sql)")
    generators.sort(key=lambda g: (g.order, g.name))
    by_name = {g.name: g for g in generators}
    if len(by_name) != len(generators):
        raise QEError("sql/signals: two templates declare the same generator name")
    classes = [g.class_name for g in generators]
    if len(set(classes)) != len(classes):
        raise QEError("sql/signals: two templates declare the same class name")
    sizing_names = {p.name for p in sizing}
    for gen in generators:
        for used in gen.uses:
            if used not in by_name or used == gen.name:
                raise QEError(f"sql/{gen.template}: uses unknown generator {used!r}")
        clash = {p.name for p in gen.params} & sizing_names
        if clash:
            raise QEError(f"sql/{gen.template}: parameter(s) {', '.join(sorted(clash))} shadow sizing parameters")
    reg = SignalRegistry(by_name, sizing)
    for gen in generators:  # cycles in `uses` would recurse forever
        _check_acyclic(reg, gen.name, ())
    return reg


def _check_acyclic(reg: SignalRegistry, name: str, path: tuple[str, ...]) -> None:
    if name in path:
        raise QEError(f"sql/signals: generators use each other in a cycle: {' -> '.join((*path, name))}")
    for used in reg.generators[name].uses:
        _check_acyclic(reg, used, (*path, name))


@lru_cache(maxsize=1)
def registry() -> SignalRegistry:
    """The registry of the shipped generators (cached)."""
    return build_registry()


def generator(name: str) -> SignalGenerator:
    """A shipped generator by name or class name."""
    return registry().get(name)


# -- rendering ------------------------------------------------------------------------------------------


def _fail(message: str) -> None:
    raise QEError(message)


def _check_symbols(symbols: list[str] | None) -> list[str] | None:
    if symbols is None:
        return None
    out: list[str] = []
    for entry in symbols:
        for symbol in str(entry).split(","):
            symbol = symbol.strip()
            if not symbol:
                continue
            if not _SYMBOL.match(symbol):
                raise QEError(f"invalid symbol {symbol!r} (letters, digits and . _ - only)")
            if symbol not in out:
                out.append(symbol)
    return out or None


def signal_query(name: str, timeframe: str = "1m", symbols: list[str] | None = None,
                 params: Mapping[str, Any] | None = None) -> str:
    """The rendered SELECT of generator ``name`` over ``features_<timeframe>`` (see the module docstring).

    Parameters
    ----------
    name : str
        Generator name (``momentum``) or class name (``MomentumSignalGenerator``).
    timeframe : {"1m", "1h", "1d"}
    symbols : list of str, optional
        Symbols (roots of the continuous series) to keep; default every symbol with features.
    params : mapping, optional
        Parameter overrides by name (``{"short": 5, "momentum.adx_min": 25}``); values may be text.

    Raises
    ------
    QEError
        Unknown generator, timeframe or parameter, a value of the wrong type, a parameter combination the
        template refuses, or a rendered query that does not match its header or fails the look-ahead lint.
    """
    from warehouse.templates import render

    reg = registry()
    gen = reg.get(name)
    if timeframe not in TIMEFRAMES:
        raise QEError(f"signals are computed on {', '.join(TIMEFRAMES)} features, not {timeframe!r}")
    _, nested = reg.resolve(gen.name, params)
    sql = render(gen.template, generator=gen.name, params=nested, outputs=[o.name for o in gen.outputs],
                 timeframe=timeframe, symbols=_check_symbols(symbols), fail=_fail)
    check_query(gen, sql)
    return sql.strip()


def check_query(gen: SignalGenerator, sql: str) -> None:
    """Projections equal to the declared columns (in order), and the look-ahead lint."""
    import sqlglot

    from warehouse.features.lint import lint_lookahead

    tree = sqlglot.parse_one(sql, read="duckdb")
    projected = [p.alias_or_name for p in tree.selects]
    declared = list(gen.columns)
    if projected != declared:
        raise QEError(f"sql/{gen.template}: the query returns {', '.join(projected)} but the header declares "
                      f"{', '.join(declared)}")
    lint_lookahead(f"sql/{gen.template}", tree)


# -- materialization ------------------------------------------------------------------------------------


@dataclass
class SignalBuildReport:
    """What :func:`build_signals` wrote."""

    name: str
    timeframe: str
    path: Path
    params: dict[str, Any]
    symbols: list[str] = field(default_factory=list)
    rows: int = 0
    files: int = 0
    seconds: float = 0.0
    #: A warning when ``signal`` is NULL on every row of some symbol (too little history), else None.
    warning: str | None = None


def signals_dir(root: Path, name: str, timeframe: str) -> Path:
    """``<warehouse>/signals/<name>/timeframe=<tf>``: one ``symbol=<S>/year=<Y>/data.parquet`` per partition."""
    return Path(root) / "signals" / name / f"timeframe={timeframe}"


def signals_relation(root: Path, name: str, timeframe: str) -> str:
    """A SELECT over the materialized signals of ``name`` (the generator's columns, symbol first)."""
    directory = signals_dir(root, name, timeframe)
    glob = str(directory / "symbol=*" / "year=*" / "*.parquet").replace("'", "''")
    return (f"SELECT symbol, * EXCLUDE (symbol, year, timeframe) FROM read_parquet('{glob}', hive_partitioning = true, "
            "hive_types = {'symbol': VARCHAR, 'year': INTEGER, 'timeframe': VARCHAR})")


@holds_write_lock
def build_signals(wh: Any, name: str, timeframe: str = "1m", symbols: list[str] | None = None,
                  params: Mapping[str, Any] | None = None) -> SignalBuildReport:
    """Compute generator ``name`` and write it to Parquet under ``signals_dir(wh.root, name, timeframe)``.

    One file per (symbol, year), written by DuckDB to a staging directory on the same file system and renamed
    into place (atomic per file: a reader sees the old file or the new one). Every symbol computed is replaced
    whole (its year partitions that are no longer produced are removed); without ``symbols`` that is every
    symbol with features, and symbols no longer present are removed too. ``_build.json`` beside the partitions
    records the parameters, the SQL digest and the time of the build of each symbol.

    Read the result back with :func:`signals_relation` (a backtest over it needs ``--timeframe``: the
    timeframe cannot be inferred from a ``read_parquet`` path).
    """
    import duckdb
    import pyarrow.parquet as pq

    from warehouse.store import fsync_dir

    started = time.perf_counter()
    reg = registry()
    gen = reg.get(name)
    flat, _ = reg.resolve(gen.name, params)
    sql = signal_query(gen.name, timeframe, symbols, params)
    con = wh.connect()
    have = con.sql(f"SELECT count(*) FROM features_{timeframe}").fetchone()[0]
    if not have:
        raise QEError(f"features_{timeframe} is empty: run `qe features build --timeframe {timeframe}` first")
    target_dir = signals_dir(wh.root, gen.name, timeframe)
    report = SignalBuildReport(gen.name, timeframe, target_dir, flat)
    staging = Path(wh.root) / ".staging" / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        try:
            con.execute(
                f"COPY (SELECT *, year(ts) AS year FROM ({sql})) TO '{_quote(staging)}' "
                "(FORMAT parquet, PARTITION_BY (symbol, year), COMPRESSION zstd, OVERWRITE_OR_IGNORE)"
            )
        except duckdb.Error as exc:
            raise QEError(f"signal {gen.name} on {timeframe}: {str(exc).splitlines()[0]}") from exc
        produced: dict[str, dict[str, Path]] = {}
        for path in sorted(staging.glob("symbol=*/year=*/*.parquet")):
            symbol = path.parent.parent.name.split("=", 1)[1]
            year = path.parent.name
            if year in produced.setdefault(symbol, {}):
                raise QEError(f"signal build of {symbol} produced several files for {year}")
            produced[symbol][year] = path
            report.rows += pq.ParquetFile(path).metadata.num_rows
        chosen = _check_symbols(symbols)
        for symbol, years in sorted(produced.items()):
            symbol_dir = target_dir / f"symbol={symbol}"
            for year, path in sorted(years.items()):
                target = symbol_dir / year / "data.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)  # same file system: atomic
                fsync_dir(target.parent)
                report.files += 1
            for stale in symbol_dir.glob("year=*"):
                if stale.name not in years:
                    shutil.rmtree(stale)
        # Symbols that were computed but produced no rows (or, on a full build, that are gone) are removed.
        existing = {p.name.split("=", 1)[1] for p in target_dir.glob("symbol=*")} if target_dir.exists() else set()
        scope = set(chosen) if chosen else existing
        for symbol in sorted(scope - set(produced)):
            shutil.rmtree(target_dir / f"symbol={symbol}", ignore_errors=True)
        report.symbols = sorted(produced)
        _write_manifest(target_dir / "_build.json", report, sql)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    wh.refresh()  # the signals_<name>_<tf> view now reads the new files
    report.warning = _null_signal_warning(wh, gen.name, timeframe, sql, report.symbols)
    report.seconds = time.perf_counter() - started
    return report


def _null_signal_warning(wh: Any, name: str, timeframe: str, sql: str, symbols: list[str]) -> str | None:
    from engine.signals.checks import all_null_symbols, null_signal_warning, warm_up

    if not symbols:
        return None
    empty = all_null_symbols(wh.connect(), signals_relation(wh.root, name, timeframe))
    return null_signal_warning(f"signals {name} {timeframe}", empty, warm_up(sql)) if empty else None


def _write_manifest(path: Path, report: SignalBuildReport, sql: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(path.read_text()) if path.exists() else {}
    digest = hashlib.sha256(sql.encode()).hexdigest()[:16]
    built_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    symbols = manifest.get("symbols", {})
    for symbol in report.symbols:
        symbols[symbol] = {"params": report.params, "sql_sha256": digest, "built_at": built_at}
    manifest = {"generator": report.name, "timeframe": report.timeframe, "symbols": symbols}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")
