"""Keep a live process's memory mapped between bars.

DuckDB allocates its vectors through its own jemalloc, which gives pages left unused for 1 s back to the operating
system (``dirty_decay_ms:1000``, its build's setting). A backtest or a build never idles that long; a live session
idles about a minute between bars, so each bar's statements (the features, the validation, the query) would take
their buffers back page fault by page fault -- and jemalloc purges the decayed pages inside the bar's own frees.
Measured on the 2-core machine with ``bench/bench_live_loop.py --pace``: bench/README.md, the live loop section.

The setting is read once, when DuckDB's library is loaded, from ``DUCKDB_JE_MALLOC_CONF`` (jemalloc's
``MALLOC_CONF`` under DuckDB's symbol prefix), so :func:`keep_duckdb_memory` must run before ``import duckdb``: the
``qe`` entry point calls it for the live commands (:mod:`engine.cli.entry`). A value the user set is kept.

Pages freed are returned after :data:`DECAY_MS` instead of 1 s: a bar a minute finds them mapped (jemalloc's decay
curve returns ~10 % of them within a minute), and memory left unused for minutes still goes back.
"""

from __future__ import annotations

import os
import sys

__all__ = ["DECAY_MS", "JEMALLOC_ENV", "keep_duckdb_memory"]

#: The environment variable DuckDB's bundled jemalloc reads its options from.
JEMALLOC_ENV = "DUCKDB_JE_MALLOC_CONF"
#: Milliseconds before freed pages go back to the system, dirty (not yet advised) and muzzy (advised free).
DECAY_MS = 300_000


def keep_duckdb_memory() -> bool:
    """Ask DuckDB's allocator to keep freed pages for :data:`DECAY_MS` (unless ``DUCKDB_JE_MALLOC_CONF`` is set).

    Returns
    -------
    bool
        Whether the setting can take effect: False once ``duckdb`` is imported (its allocator read the options then).
    """
    if "duckdb" in sys.modules or "_duckdb" in sys.modules:
        return False
    os.environ.setdefault(JEMALLOC_ENV, f"dirty_decay_ms:{DECAY_MS},muzzy_decay_ms:{DECAY_MS}")
    return True
