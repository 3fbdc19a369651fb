"""``python -m engine.cli``: the ``qe`` command."""

from engine.cli.entry import main

main()
