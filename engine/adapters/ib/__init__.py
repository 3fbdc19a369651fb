"""Interactive Brokers: the execution handler (ib_async) and a TWS-protocol gateway simulator.

This package is the only place in the project that imports ``ib_async``; the simulator imports nothing
from it (it speaks the socket protocol itself), so that tests exercise the real client against it.
"""
