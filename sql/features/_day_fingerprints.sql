{#-
  One row per symbol and CME trading date of the feature source bars (relation feature_source) of the symbols in
  the bound list $symbols (NULL: every symbol): the symbol, the date, its row count, the exact (HUGEINT) sum of a
  hash of every bar's ts and values, and its first bar's ts.
  A corrected bar (same ts, new values), an appended or a removed bar changes its date's count or sum; an
  appended session is one new date (the session opens 18:00 ET on the previous calendar day).
-#}
{% import 'macros.sql' as m %}
SELECT symbol, CAST({{ m.trading_date('ts') }} AS VARCHAR) AS trading_date, count(*) AS n,
    sum(hash(ts, open, high, low, close, volume)) AS h, min(ts) AS first_ts
FROM feature_source
WHERE $symbols IS NULL OR list_contains($symbols, symbol)
GROUP BY ALL
ORDER BY symbol, trading_date
