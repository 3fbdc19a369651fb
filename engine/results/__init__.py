"""What a run leaves: the equity recorder, the ledger tables, metrics and the HTML report."""
