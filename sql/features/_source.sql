{#-
  The bars features run on, per timeframe: the back-adjusted (ratio) continuous series, or a plain series as is.
    1m: bars_1m_adj_ratio.
    1h: stored hourly bars where a symbol has them, else hourly bars resampled from its adjusted 1m bars
        (resample_intraday.sql).
    1d: CME session bars (trading date, not UTC day): stored session bars where a symbol has them (its
        `daily_conventions` row says 'session'), else resampled from its adjusted 1m bars
        (resample_session_daily.sql), else its stored daily bars (UTC days).
  Parameter: timeframe.
-#}
{% import 'macros.sql' as m %}
{%- if timeframe == '1m' %}
SELECT symbol, ts, open, high, low, close, volume FROM bars_1m_adj_ratio
{%- elif timeframe == '1h' %}
SELECT symbol, ts, open, high, low, close, volume FROM bars_1h_adj_ratio
UNION ALL
SELECT symbol, ts, open, high, low, close, volume
FROM ({% with source = 'bars_1m_adj_ratio', minutes = 60 %}{% include 'resample_intraday.sql' %}{% endwith %})
WHERE symbol NOT IN (SELECT DISTINCT symbol FROM bars_1h_adj_ratio)
{%- else %}
{%- set session_symbols = "SELECT symbol FROM daily_conventions WHERE convention = 'session'" %}
SELECT symbol, ts, open, high, low, close, volume FROM bars_1d_adj_ratio
WHERE symbol IN ({{ session_symbols }})
UNION ALL
SELECT symbol, ts, open, high, low, close, volume
FROM ({% with source = 'bars_1m_adj_ratio' %}{% include 'resample_session_daily.sql' %}{% endwith %})
WHERE symbol NOT IN ({{ session_symbols }})
UNION ALL
SELECT symbol, ts, open, high, low, close, volume FROM bars_1d_adj_ratio
WHERE symbol NOT IN (SELECT DISTINCT symbol FROM bars_1m_adj_ratio) AND symbol NOT IN ({{ session_symbols }})
{%- endif %}
