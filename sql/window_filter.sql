{#-
  A backtest query restricted to a window of CME trading dates (walk-forward optimisation).
  Parameters:
    query  the user's SELECT (returns a TIMESTAMPTZ `ts`), inserted verbatim;
    start  first trading date of the window, ISO text 'YYYY-MM-DD', or none for no lower bound;
    end    trading date just after the window (exclusive), ISO text, or none for no upper bound;
    dates  true: return the distinct trading dates of the window's rows (column `trading_date`, ascending)
           instead of the rows.
  A bar's trading date is >= D exactly when its ts is >= the session open of D (18:00 ET the evening
  before), so the bounds are plain `ts` comparisons the scan can push down.
-#}
{% import 'macros.sql' as m %}
{%- set lower = m.session_open("DATE '" ~ start ~ "'") if start is not none else none %}
{%- set upper = m.session_open("DATE '" ~ end ~ "'") if end is not none else none %}
SELECT
{%- if dates %}
    DISTINCT {{ m.trading_date('qe_window.ts') }} AS trading_date
{%- else %}
    qe_window.*
{%- endif %}
FROM (
{{ query }}
) AS qe_window
{%- if lower is not none or upper is not none %}
WHERE {% if lower is not none %}qe_window.ts >= {{ lower }}{% endif %}
{%- if lower is not none and upper is not none %} AND {% endif %}
{%- if upper is not none %}qe_window.ts < {{ upper }}{% endif %}
{%- endif %}
{%- if dates %}
ORDER BY trading_date
{%- endif %}
