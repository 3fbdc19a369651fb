"""How much history before a point T the features of the bars from T on need: the bounded tail.

Features at ``ts`` read only bars with open time ``<= ts``, and every family reads a bounded amount of them,
so the rows from T on can be computed from the same templates over only a *tail* of the series: the bars from
a start row ``s`` before T to the end. This module derives ``s``'s requirements per family from the registry
(the headers' declared warm-ups) and from the catalog's recursive filters; :mod:`warehouse.features.incremental`
turns them into one start row per symbol (``sql/features/_tail_start.sql``).

What each kind of feature needs (catalog sections 3-6), per family:

* **Windows** (``first=F`` with an integer F): the value at row t reads rows t-F..t (a window of n rows has
  ``first = n - 1``; a lag k has ``first = k``; stacked windows add up, e.g. ``rv_pctrank_20_240``: 259), so
  F rows before T suffice, and every ``rn >= F`` gate of the templates is open on the tail rows from T on.
* **Recursive filters** (EMA, Wilder). The templates drop the history whose weight is below ``e^-40`` (the
  block constructions of ``_filters.sql`` and the families carry two blocks of L rows with ``L*lam >= 20``, or
  block-state sums truncated at ``b^(16 M) < e^-40``; ``lam = -ln(1 - alpha)``). A tail that starts W rows before
  T seeds the filter on its own first n inputs; the difference to the full build's state then decays as
  ``b^(W - n)``, so ``W = ceil(40 / lam) + n`` leaves at most ``e^-40 = 4.2e-18`` of the state, below double
  precision (2^-53 = 1.1e-16): the tail's rows equal the full build's to rounding. Chained filters (MACD signal,
  TRIX, ADX) add their stages' W; an input that reads the previous bar (TR, r, dc, DM, s*v) adds 1, a lagged
  output (``atr_14[t-1]``, TRIX ``E[t-1]``) 1 more.
  The bound counts rows with a *non-zero* input: through a stale stretch (zero TR, zero volume, unchanged close)
  the state only decays, so the tail must reach W rows before the last active row before T (the
  ``anchors`` of ``_tail_start.sql``), not just before T.
* **Running totals.** OBV enters ``obv_z_60`` and ``obv_slope_20`` only through a z-score and a slope over 60/20
  rows, both invariant to an additive offset (the catalog states it), and OBV is an exact integer sum; the A/D
  line enters ``adosc_3_10_norm`` only as ``EMA_3(AD) - EMA_10(AD)``, which the volume template computes from
  ``mfm*v`` directly (u3 - u10: AD cancels exactly). Session running sums restart at each session open. No offset
  has to be carried.
* **Sessions.** ``first=Dk`` features read the current session from its open and the k - 1 complete sessions
  before it (the NULL rule is ``sid < k``), so the tail starts at the open of the k-th session before T's session
  (then T's session has tail sid k); ``D1+1`` and ``max(D1,14)`` are D1 (plus a window). ``D2rth``
  (``overnight_gap``) also needs the latest earlier session with RTH rows, which can be any earlier session.
  ``tod20`` (``rel_volume_tod_20``) needs the 20 most recent earlier rows at each minute of day of the new rows.
  ``rth`` features are closed form.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from warehouse.errors import QEError
from warehouse.features.headers import FeatureSpec
from warehouse.features.registry import Family

#: The dropped history weighs at most ``e^-DECAY_EXPONENT`` (the templates' own truncation; module docstring).
DECAY_EXPONENT = 40.0


@dataclass(frozen=True)
class Filter:
    """One recursive filter: ``kind`` "ema" (alpha = 2/(n+1)) or "wilder" (alpha = 1/n), period ``n`` in rows."""

    kind: str
    n: int

    @property
    def alpha(self) -> float:
        return 2.0 / (self.n + 1) if self.kind == "ema" else 1.0 / self.n

    @property
    def warmup(self) -> int:
        """Rows W after which a restarted filter equals the full one to ``e^-40``: ``ceil(40 / lam) + n``."""
        lam = -math.log(1.0 - self.alpha)
        return math.ceil(DECAY_EXPONENT / lam) + self.n


@dataclass(frozen=True)
class Chain:
    """The recursive filters behind one feature: stages run in sequence, filters of a stage side by side;
    ``lags`` = rows the inputs and outputs reach back outside the filters (previous bar, lagged output)."""

    stages: tuple[tuple[Filter, ...], ...]
    lags: int = 0

    @property
    def warmup(self) -> int:
        return sum(max(f.warmup for f in stage) for stage in self.stages) + self.lags


def _e(n: int) -> Filter:
    return Filter("ema", n)


def _w(n: int) -> Filter:
    return Filter("wilder", n)


#: The catalog's recursive features (FEATURES.md section 6), by name. A test checks that every catalog feature
#: whose formula names an EMA, a Wilder filter or a feature built on one is listed here.
RECURSIVE: dict[str, Chain] = {
    "rsi_2": Chain(((_w(2),),), lags=1),
    "rsi_14": Chain(((_w(14),),), lags=1),
    "macd_12_26": Chain(((_e(12), _e(26)),)),
    "macd_signal_12_26_9": Chain(((_e(12), _e(26)), (_e(9),))),
    "macd_hist_12_26_9": Chain(((_e(12), _e(26)), (_e(9),))),
    "ppo_12_26": Chain(((_e(12), _e(26)),)),
    "trix_15": Chain(((_e(15),), (_e(15),), (_e(15),)), lags=1),
    "dist_sma_20_atr": Chain(((_w(14),),), lags=1),
    "dist_ema_50_atr": Chain(((_e(50), _w(14)),), lags=1),
    "pvo_12_26": Chain(((_e(12), _e(26)),)),
    "tick_imbalance_ema_20": Chain(((_e(20),),), lags=1),
    "adosc_3_10_norm": Chain(((_e(3), _e(10)),)),
    "vwap_session_dist_atr": Chain(((_w(14),),), lags=1),
    "ewma_vol_32": Chain(((_e(32),),), lags=1),
    "atr_14": Chain(((_w(14),),), lags=1),
    "natr_14": Chain(((_w(14),),), lags=1),
    "atr_ratio_5_50": Chain(((_w(5), _w(50)),), lags=1),
    "range_expansion_14": Chain(((_w(14),),), lags=2),
    "kc_width_20": Chain(((_e(20), _w(10)),), lags=1),
    "kc_pos_20": Chain(((_e(20), _w(10)),), lags=1),
    "squeeze_on": Chain(((_e(20), _w(10)),), lags=1),
    "adx_14": Chain(((_w(14),), (_w(14),)), lags=1),
    "plus_di_14": Chain(((_w(14),),), lags=1),
    "minus_di_14": Chain(((_w(14),),), lags=1),
}

_INT = re.compile(r"\d+")
_SESSIONS = re.compile(r"D(\d+)")


@dataclass(frozen=True)
class TailNeeds:
    """What the rows from T on of one family need from the bars before T.

    Attributes
    ----------
    rows : int
        Bars before T (counted from the last active bar before T when ``anchors``).
    sessions : int
        Complete sessions before T's session, read from their open (0: none).
    tod : bool
        The 20 most recent earlier rows at each minute of day of the new rows (``tod20``).
    rth : bool
        The latest earlier session with RTH rows (``D2rth``).
    anchors : bool
        The family has recursive filters: ``rows`` count back from the last active bar of every filter input.
    """

    rows: int
    sessions: int = 0
    tod: bool = False
    rth: bool = False
    anchors: bool = False

    def merge(self, other: TailNeeds) -> TailNeeds:
        return TailNeeds(max(self.rows, other.rows), max(self.sessions, other.sessions), self.tod or other.tod,
                         self.rth or other.rth, self.anchors or other.anchors)


def feature_needs(spec: FeatureSpec, carried_state: bool = False) -> TailNeeds:
    """The tail one feature needs, from its declared warm-up (``first=``) and :data:`RECURSIVE`.

    ``carried_state``: the feature's recursive filters continue from a carried state (a seed per filter at the
    tail's first row, :mod:`warehouse.features.live`) instead of restarting: no warm-up and no anchors, only the
    rows its inputs and outputs reach back outside the filters (the chain's ``lags``) and its declared window."""
    warmup = spec.warmup.removeprefix("first=").strip()
    sessions = max((int(k) for k in _SESSIONS.findall(warmup)), default=0)
    rows = 0 if sessions else max((int(k) for k in _INT.findall(warmup)), default=0)
    if sessions and "," in warmup:  # max(D1,14): a session part and a window part
        rows = max(int(k) for k in _INT.findall(warmup.split(",", 1)[1]))
    if warmup not in ("rth", "tod20") and not sessions and not warmup.isdigit():
        raise QEError(f"{spec.template}: {spec.name} has a warm-up {spec.warmup!r} the tail bound does not know")
    chain = RECURSIVE.get(spec.name)
    if chain is not None:
        rows = max(rows, chain.lags if carried_state else chain.warmup)
    return TailNeeds(rows, sessions, tod=warmup == "tod20", rth=warmup.endswith("rth") and sessions > 0,
                     anchors=chain is not None and not carried_state)


def family_needs(family: Family) -> TailNeeds:
    """The tail a whole family needs: the union of its features' needs."""
    needs = TailNeeds(0)
    for spec in family.specs:
        needs = needs.merge(feature_needs(spec))
    return needs
