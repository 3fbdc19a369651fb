"""Venue adapters: everything that speaks a broker's or data vendor's wire protocol lives below here."""
