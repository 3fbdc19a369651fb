{#-
  The first CME trading date of each symbol a backtest query returns (days since 1970-01-01), read before the
  run starts to check that the fee and margin tables cover it.
  Parameters: query (the user's SELECT, inserted verbatim).
-#}
{% import 'macros.sql' as m %}
SELECT
    q.symbol,
    CAST(min({{ m.trading_date('q.ts') }}) - DATE '1970-01-01' AS INTEGER) AS first_trading_day
FROM (
{{ query }}
) AS q
GROUP BY q.symbol
ORDER BY q.symbol
