"""The `qe` command line, the demo, and (later) the event-driven engine."""
