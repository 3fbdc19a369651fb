"""The feature registry, generated from the family templates under ``sql/features/``.

For every family template ``sql/features/NN_<family>.sql``: the header declares the outputs
(:mod:`warehouse.features.headers`), the template is rendered and parsed by sqlglot, the query's projections
must be ``symbol, ts`` and then exactly the declared outputs in order (an error names the file, the position
and both names), the look-ahead lint runs (:mod:`warehouse.features.lint`), a name declared by two families
is refused, and the column lineage of each feature (which of open/high/low/close/volume/ts it reads) is
derived through the shared ``base`` query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources

from sqlglot.lineage import lineage

from warehouse.errors import QEError
from warehouse.features.checked_cache import checked
from warehouse.features.headers import FeatureSpec, parse_header
from warehouse.features.lint import lint_lookahead
from warehouse.templates import note_select, render, render_composed, render_parsed

#: Prefix of a family's hidden output columns carrying a recursive filter's state (live path only).
STATE_PREFIX = "__state__"
BASE_COLUMNS = ("open", "high", "low", "close", "volume", "ts")
BARS_SCHEMA = {
    "bars": {"symbol": "varchar", "ts": "timestamptz", "open": "double", "high": "double", "low": "double",
             "close": "double", "volume": "bigint"}
}


@dataclass
class Family:
    """One family template: its declared features and its rendered, checked SQL."""

    template: str
    specs: list[FeatureSpec]
    sql: str
    #: Recursive filters whose state the rendered SQL outputs after the declared features, as hidden columns
    #: ``__state__<name>`` (only when rendered with ``filter_seeds``: the live path, :mod:`warehouse.features.live`).
    states: list[str] = field(default_factory=list)


@dataclass
class Registry:
    """Every feature in catalog order, with the family that computes it."""

    families: list[Family]
    base_sql: str
    features: list[FeatureSpec] = field(init=False)

    def __post_init__(self) -> None:
        self.features = [spec for family in self.families for spec in family.specs]

    @cached_property
    def by_name(self) -> dict[str, FeatureSpec]:
        return {spec.name: spec for spec in self.features}

    def family_of(self, name: str) -> Family:
        spec = self.spec(name)
        return next(f for f in self.families if f.template == spec.template)

    def spec(self, name: str) -> FeatureSpec:
        try:
            return self.by_name[name]
        except KeyError:
            raise QEError(f"unknown feature {name!r} (see qe features list)") from None

    def lineage(self, name: str) -> list[str]:
        """Base bar columns (of open, high, low, close, volume, ts) whose values feature ``name`` reads.

        Ordering rows by ts inside a (named) window is not counted as reading ts; templates use named windows.
        """
        family = self.family_of(name)
        node = lineage(name, family.sql, schema=BARS_SCHEMA, sources={"base": self.base_sql}, dialect="duckdb")
        leaves = {n.name.split(".")[-1] for n in node.walk() if not n.downstream}
        return [c for c in BASE_COLUMNS if c in leaves]


def family_templates() -> list[tuple[str, str]]:
    """(name, text) of every shipped family template, in file order (``NN_family.sql``)."""
    folder = resources.files("sql").joinpath("features")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql") and p.name[:2].isdigit())
    return [(f"features/{n}", folder.joinpath(n).read_text(encoding="utf-8")) for n in names]


def check_family(template: str, text: str, params: dict) -> Family:
    """Parse the header, render, and check projections and look-ahead of one family template (a passing check is
    kept on disk and read by later processes: :mod:`warehouse.features.checked_cache`)."""
    specs = parse_header(template, text)
    outcome = checked("family", {"template": template, "text": text, "params": params},
                      lambda: _check_family_sql(template, text, specs, params))
    note_select(outcome["sql"])  # a composed feature query embeds it without parsing it again
    return Family(template, specs, outcome["sql"], outcome["states"])


def _check_family_sql(template: str, text: str, specs: list[FeatureSpec], params: dict) -> dict:
    """Render and check one family template: {"sql": its SQL, "states": its hidden filter-state columns}."""
    sql, tree = render_parsed(f"sql/{template}", text, **params)
    projected = [p.alias_or_name for p in tree.selects]
    # Hidden filter-state columns trail the declared outputs (rendered with filter_seeds only).
    states = []
    while projected and projected[-1].startswith(STATE_PREFIX):
        states.insert(0, projected.pop()[len(STATE_PREFIX):])
    declared = ["symbol", "ts", *(s.name for s in specs)]
    for position, (got, want) in enumerate(zip(projected, declared), start=1):
        if got != want:
            raise QEError(
                f"sql/{template}: output column {position} is {got!r} in the query but {want!r} in the header"
            )
    if len(projected) != len(declared):
        more = projected[len(declared):] or declared[len(projected):]
        side = "query" if len(projected) > len(declared) else "header"
        raise QEError(f"sql/{template}: the {side} has extra output column(s) {', '.join(more)}")
    lint_lookahead(f"sql/{template}", tree)
    return {"sql": sql, "states": states}


#: Bars per year by timeframe (annualization: trading bars per day x 252; catalog section 1).
BARS_PER_YEAR = {"1m": 347_760, "1h": 5_796, "1d": 252}
#: RTH windows [open, close) in ET minute of day by symbol prefix (catalog section 1); longest prefix wins.
RTH = (
    [(k, 570, 960) for k in ("ES", "NQ", "YM", "RTY", "MES", "MNQ", "MYM", "M2K")]
    + [(k, 540, 870) for k in ("CL", "NG", "RB", "HO", "MCL")]
    + [(k, 500, 810) for k in ("GC", "SI", "HG", "MGC")]
    + [(k, 500, 900) for k in ("ZN", "ZB", "ZF", "ZT", "UB", "TN", "6E", "6J", "6B", "6A", "6C", "6S", "6N", "6M")]
)
RTH_DEFAULT = (570, 960)


def template_params(timeframe: str = "1m") -> dict:
    """Parameters every feature template receives: timeframe, bars_per_year, the RTH table (longest key first)."""
    if timeframe not in BARS_PER_YEAR:
        raise QEError(f"features are defined on 1m, 1h and 1d bars, not {timeframe!r}")
    rth = sorted(RTH, key=lambda row: -len(row[0]))
    return {"timeframe": timeframe, "bars_per_year": BARS_PER_YEAR[timeframe], "rth": rth, "rth_default": RTH_DEFAULT}


def build_registry(templates: list[tuple[str, str]] | None = None, timeframe: str = "1m", **params) -> Registry:
    """Build and check the registry from ``templates`` (default: the shipped family templates)."""
    params = {"source": "base", **template_params(timeframe), **params}
    families = [check_family(name, text, params) for name, text in (templates or family_templates())]
    seen: dict[str, str] = {}
    for family in families:
        for spec in family.specs:
            if spec.name in seen:
                raise QEError(f"feature {spec.name!r} is declared by both sql/{seen[spec.name]} and sql/{family.template}")
            seen[spec.name] = family.template
    base_params = {**params, "source": "bars"}
    base_sql = checked("base", {"params": base_params}, lambda: _check_base_sql(base_params))["sql"]
    return Registry(families, base_sql)


def _check_base_sql(params: dict) -> dict:
    sql, tree = render_parsed("sql/features/base.sql", **params)
    lint_lookahead("sql/features/base.sql", tree)
    return {"sql": sql}




@dataclass(frozen=True)
class StagedQueries:
    """The feature query split for a staged build (see :func:`staged_queries`): ``base`` (stored once), one
    SELECT per family over a relation named ``base``, and the features in catalog order with their family."""

    base: str
    families: list[str]
    #: Every feature in catalog order: ``.name``, ``.type`` and ``.family_index`` (its position in ``families``).
    features: list = field(default_factory=list)


def staged_queries(registry: Registry, source: str, timeframe: str = "1m") -> StagedQueries:
    """The same features as :func:`feature_query`, as separate statements: ``base`` over ``source`` and each
    family over a relation named ``base`` (``symbol, ts`` and its declared outputs). Neither is ordered: the
    caller orders the families' rows by (symbol, ts) and puts them side by side
    (:mod:`warehouse.features.materialize`), applying the same projection as ``_project.sql`` (declared types,
    non-finite doubles as NULL). Peak memory is the largest family's, not the sum of all five families' windows
    held at once by one query."""
    from types import SimpleNamespace

    base_sql = render("features/base.sql", **{**template_params(timeframe), "source": source})
    index = {family.template: i for i, family in enumerate(registry.families)}
    features = [SimpleNamespace(name=s.name, type=s.type, family_index=index[s.template]) for s in registry.features]
    by_family: dict[int, list[str]] = {i: [] for i in range(len(registry.families))}
    for f in features:
        by_family[f.family_index].append(f.name)
    families = [render_composed("features/_family_staged.sql", {"family_sql": family.sql}, columns=by_family[i])
                for i, family in enumerate(registry.families)]
    return StagedQueries(base_sql, families, features)


def feature_query(registry: Registry, source: str, timeframe: str = "1m",
                  wrap_base: Callable[[str], str] | None = None, states: bool = False) -> str:
    """One SELECT computing every registered feature over the bar relation ``source``.

    ``source`` must have symbol, ts, open, high, low, close, volume; the result has ``symbol``, ``ts`` and the
    features in registry order with their declared types. ``wrap_base`` (optional) maps the shared base query
    (``base.sql`` over ``source``) to the SELECT the families read instead: the live path adds each symbol's
    session offset to ``sid`` there (:mod:`warehouse.features.live`). ``states``: also output the families'
    hidden filter-state columns (``__state__<name>``, after the features; families rendered with
    ``filter_seeds``).
    """
    from types import SimpleNamespace

    base_sql = render("features/base.sql", **{**template_params(timeframe), "source": source})
    if wrap_base is not None:
        base_sql = wrap_base(base_sql)
    index = {family.template: i for i, family in enumerate(registry.families)}
    features = [SimpleNamespace(name=s.name, type=s.type, family_index=index[s.template]) for s in registry.features]
    extra = {"states": [(i, name) for i, f in enumerate(registry.families) for name in f.states]} if states else {}
    return render_composed("features/_compose.sql", {"base_sql": base_sql, "families": [f.sql for f in registry.families]},
                           features=features, **extra)
