"""The ``qe`` command line (:mod:`.main`), its output helpers, the demo and the ``qe signals`` group."""
