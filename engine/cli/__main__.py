"""``python -m engine.cli``: the ``qe`` command."""

from engine.cli.main import main

main()
