"""The ``qe`` entry point: what must happen before DuckDB is loaded, then :func:`engine.cli.main.main`.

Imports nothing that loads DuckDB: the live commands' allocator setting (:mod:`engine.live.memory`) is read when
DuckDB's library loads, which the command modules do on import.
"""

from __future__ import annotations

import sys

#: Commands that run a live session (``qe demo --paper`` among them): their process idles between bars.
LIVE_COMMANDS = frozenset({"live", "demo"})
#: Command groups: their second word names the command (``qe features build``).
GROUPS = ("rolls", "features", "signals", "live")
#: Top-level options that take a value (``qe -w DIR live ...``).
VALUED_OPTIONS = ("--warehouse", "-w", "--lock-timeout")


def command_words(argv: list[str]) -> list[str]:
    """The command of a ``qe`` command line: its first word not an option or an option's value, and the second
    one when the first is a group (``["features", "build"]``, ``["ingest"]``)."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip or arg.startswith("-"):
            skip = not skip and arg in VALUED_OPTIONS
            continue
        words.append(arg)
        if len(words) == 2 or words[0] not in GROUPS:
            break
    return words


def main() -> None:
    words = command_words(sys.argv[1:])
    if words and words[0] in LIVE_COMMANDS:
        from engine.live.memory import keep_duckdb_memory

        keep_duckdb_memory()
    from engine.cli.main import main as run

    run()


if __name__ == "__main__":
    main()
