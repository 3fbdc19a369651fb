"""Value types every mode shares: orders and fills, the portfolio's books, instrument terms, parameters."""
