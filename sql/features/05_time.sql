{#- features
family: time
category: time
minute_of_day              | int    | n=1 | first=0   | 60*hour + minute of ts in ET (America/New_York), 0..1439
minute_of_hour             | int    | n=1 | first=0   | minute_of_day mod 60
tod_sin                    | double | n=1 | first=0   | sin(2*pi*minute_of_day / 1440)
tod_cos                    | double | n=1 | first=0   | cos(2*pi*minute_of_day / 1440)
minutes_since_session_open | int    | n=1 | first=0   | (minute_of_day - 1080) mod 1440 = (minute_of_day + 360) % 1440 (0 at 18:00 ET; a halt bar would get 1380..1439)
minutes_to_session_close   | int    | n=1 | first=0   | 1380 - minutes_since_session_open (bar open to 17:00 ET; early closes ignored; a halt bar would get 0..-59)
session_phase              | int    | n=1 | first=0   | 0 if mod >= 1080 or mod < 180 (Asia), 1 if mod < 570 (Europe), 2 if mod < 960 (US regular), else 3 (US post; also the 17:00-18:00 halt)
is_asia                    | int    | n=1 | first=0   | session_phase = 0
is_europe                  | int    | n=1 | first=0   | session_phase = 1
is_us                      | int    | n=1 | first=0   | session_phase = 2
is_rth                     | int    | n=1 | first=0   | rth_open <= minute_of_day < rth_close, RTH table by the longest key prefixing the symbol (0 on 1d bars)
rth_minutes_since_open     | int    | n=1 | first=rth | minute_of_day - rth_open if is_rth else NULL
rth_minutes_to_close       | int    | n=1 | first=rth | rth_close - minute_of_day if is_rth else NULL (1 on the last RTH minute bar)
is_first_bar_of_session    | int    | n=2 | first=1   | D(ts) <> D(ts[t-1]) as 0/1, NULL on the partition's first row
day_of_week                | int    | n=1 | first=0   | isodow(D) - 1 (Mon 0 .. Fri 4; Sunday-evening bars belong to Monday; a weekend D gives 5/6, not clamped)
dow_sin                    | double | n=1 | first=0   | sin(2*pi*day_of_week / 5)
dow_cos                    | double | n=1 | first=0   | cos(2*pi*day_of_week / 5)
day_of_month               | int    | n=1 | first=0   | day of month of D
dom_sin                    | double | n=1 | first=0   | sin(2*pi*(day_of_month - 1) / days_in_month(D))
dom_cos                    | double | n=1 | first=0   | cos(2*pi*(day_of_month - 1) / days_in_month(D))
month                      | int    | n=1 | first=0   | month of D (1..12)
month_sin                  | double | n=1 | first=0   | sin(2*pi*(month - 1) / 12)
month_cos                  | double | n=1 | first=0   | cos(2*pi*(month - 1) / 12)
days_to_roll               | int    | n=1 | first=0   | R - D in days, R = first of {TF(q) - 8, TF(q + 3) - 8} that is >= D; q = Mar/Jun/Sep/Dec month at or after D's month; TF = third Friday (first Friday + 14)
days_to_expiry             | int    | n=1 | first=0   | E - D in days, E = first of {TF(q), TF(q + 3)} that is >= D (0 on the expiry date; holidays ignored)
days_to_monthly_opex       | int    | n=1 | first=0   | O - D in days, O = first of {TF(D's month), TF(next month)} that is >= D
is_month_end               | int    | n=1 | first=0   | D is a weekday and no weekday lies in (D, last day of D's month] (plain Mon-Fri calendar)
is_month_start             | int    | n=1 | first=0   | D is a weekday and no weekday lies in [first day of D's month, D)
is_quarter_end             | int    | n=1 | first=0   | is_month_end and month in (3, 6, 9, 12)
weekdays_to_month_end      | int    | n=1 | first=0   | #weekdays d with D < d <= last day of the month = busday_count(D + 1, month end + 1) = W(month end + 1) - W(D + 1)
-#}
{#-
  Time features (catalog #121-#150): closed forms of the bar's open time in ET, of its trading date D and (RTH)
  of its symbol; only is_first_bar_of_session looks at another row (LAG of D). The inner SELECT evaluates each
  per-row ingredient once (the RTH table lookup is a 30-branch CASE; the calendar needs a few month starts),
  the outer SELECT states the catalog's formulas on them.
  Conventions (the oracle tests/features_oracle/time_features.py makes the same choices):
  * minute_of_day and trading_date come from base: ET wall clock of the bar OPEN; D = ET date + 1 day from 18:00.
  * Calendar features are functions of D on a plain Mon-Fri calendar (no holidays), as the catalog says, so a
    Good Friday closure moves neither is_month_end nor an expiry date. A weekend D (only a bar between Friday
    18:00 and Sunday 18:00 ET, which Globex never prints) is not clamped: day_of_week 5/6, no month end/start.
  * DATE - DATE is a day count. W(x) = number of weekdays in [1900-01-01, x) = 5*(n // 7) + least(n % 7, 5),
    n = x - 1900-01-01 (a Monday; every date from 1900 on), so the weekdays in (D, month end] are W(m1) - W(D + 1).
  * Third Friday of the month starting on F: TF(F) = F + (12 - isodow(F)) % 7 + 14 (first Friday, + 14 days).
  * The formulas do not depend on the timeframe: on 1d bars (ts = 18:00 ET, the session open) they give the
    catalog's degenerate values by themselves (minute_of_day 1080, session_phase 0, is_rth 0, rth_* NULL).
-#}
{% import 'macros.sql' as m %}
{%- set two_pi = (2 * pi) | double %}
{%- macro weekdays_before(x) -%}
(5 * (({{ x }} - DATE '1900-01-01') // 7) + least(({{ x }} - DATE '1900-01-01') % 7, 5))
{%- endmacro %}
{%- macro third_friday(first) -%}
({{ first }} + CAST((12 - isodow({{ first }})) % 7 + 14 AS INTEGER))
{%- endmacro %}
{#- Days from D to the first of two candidate dates (this cycle's, the next cycle's) that is on or after D. -#}
{%- macro days_to_next(this, next) -%}
CASE WHEN {{ this }} >= d THEN {{ this }} - d ELSE {{ next }} - d END
{%- endmacro %}
{%- set in_rth = '(mod >= rth_open AND mod < rth_close)' %}
{#- Bounds of every RTH window of the table (and the default): no minute outside them is RTH for any symbol. -#}
{%- set rth_earliest = (rth | map(attribute=1) | list + [rth_default[0]]) | min %}
{%- set rth_latest = (rth | map(attribute=2) | list + [rth_default[1]]) | max %}
{#- The quarterly month (3, 6, 9, 12) at or after D's month. -#}
{%- set qm = '3 * ((month(trading_date) + 2) // 3)' %}
SELECT
    symbol,
    ts,
    mod AS minute_of_day,
    mod % 60 AS minute_of_hour,
    sin({{ two_pi }} * mod / 1440) AS tod_sin,
    cos({{ two_pi }} * mod / 1440) AS tod_cos,
    -- (mod - 1080) mod 1440 with a non-negative dividend (SQL % keeps the dividend's sign).
    (mod + 360) % 1440 AS minutes_since_session_open,
    1380 - (mod + 360) % 1440 AS minutes_to_session_close,
    -- The catalog's phases as an ordered CASE; the rest, [16:00, 18:00) (post and the halt), is phase 3.
    CASE WHEN mod >= 1080 OR mod < 180 THEN 0 WHEN mod < 570 THEN 1 WHEN mod < 960 THEN 2 ELSE 3 END AS session_phase,
    CASE WHEN mod >= 1080 OR mod < 180 THEN 1 ELSE 0 END AS is_asia,
    CASE WHEN mod >= 180 AND mod < 570 THEN 1 ELSE 0 END AS is_europe,
    CASE WHEN mod >= 570 AND mod < 960 THEN 1 ELSE 0 END AS is_us,
    CASE WHEN {{ in_rth }} THEN 1 ELSE 0 END AS is_rth,
    CASE WHEN {{ in_rth }} THEN mod - rth_open END AS rth_minutes_since_open,
    CASE WHEN {{ in_rth }} THEN rth_close - mod END AS rth_minutes_to_close,
    -- NULL on the partition's first row, where the LAG is NULL.
    CAST(d <> d_prev AS INTEGER) AS is_first_bar_of_session,
    iso - 1 AS day_of_week,
    sin({{ two_pi }} * (iso - 1) / 5) AS dow_sin,
    cos({{ two_pi }} * (iso - 1) / 5) AS dow_cos,
    dom AS day_of_month,
    sin({{ two_pi }} * (dom - 1) / dim) AS dom_sin,
    cos({{ two_pi }} * (dom - 1) / dim) AS dom_cos,
    mon AS month,
    sin({{ two_pi }} * (mon - 1) / 12) AS month_sin,
    cos({{ two_pi }} * (mon - 1) / 12) AS month_cos,
    -- Roll = quarterly expiry - 8 days; once D is past this quarter's roll date, the next quarter's counts.
    {{ days_to_next(third_friday('q0') ~ ' - 8', third_friday('q1') ~ ' - 8') }} AS days_to_roll,
    {{ days_to_next(third_friday('q0'), third_friday('q1')) }} AS days_to_expiry,
    {{ days_to_next(third_friday('m0'), third_friday('m1')) }} AS days_to_monthly_opex,
    -- The last weekday of the month: D is a weekday and no weekday follows it in the month.
    CASE WHEN iso <= 5 AND {{ weekdays_before('m1') }} = {{ weekdays_before('d + 1') }} THEN 1 ELSE 0 END AS is_month_end,
    -- The first weekday of the month: D is a weekday and none precedes it, i.e. the 1st, or a Monday 2nd or 3rd.
    CASE WHEN iso <= 5 AND (dom = 1 OR (iso = 1 AND dom <= 3)) THEN 1 ELSE 0 END AS is_month_start,
    CASE WHEN iso <= 5 AND mon % 3 = 0 AND {{ weekdays_before('m1') }} = {{ weekdays_before('d + 1') }} THEN 1 ELSE 0 END
        AS is_quarter_end,
    {{ weekdays_before('m1') }} - {{ weekdays_before('d + 1') }} AS weekdays_to_month_end
FROM (
    SELECT
        symbol,
        ts,
        minute_of_day AS mod,
        trading_date AS d,
        lag(trading_date) OVER w AS d_prev,
        -- The RTH lookup is a string CASE over the whole table (~0.1 s per 1M rows each); it only matters where
        -- some RTH window could hold the minute, [{{ rth_earliest }}, {{ rth_latest }}), a third of the day; elsewhere
        -- rth_open/rth_close are NULL and is_rth is 0.
        CASE WHEN minute_of_day >= {{ rth_earliest }} AND minute_of_day < {{ rth_latest }}
            THEN {{ m.rth_open('symbol', rth, rth_default) }} END AS rth_open,
        CASE WHEN minute_of_day >= {{ rth_earliest }} AND minute_of_day < {{ rth_latest }}
            THEN {{ m.rth_close('symbol', rth, rth_default) }} END AS rth_close,
        CAST(isodow(trading_date) AS INTEGER) AS iso,
        CAST(day(trading_date) AS INTEGER) AS dom,
        CAST(day(last_day(trading_date)) AS INTEGER) AS dim,
        CAST(month(trading_date) AS INTEGER) AS mon,
        -- First days of the months whose third Friday can come next: D's month (m0) and the next one (m1); the
        -- quarterly month (Mar/Jun/Sep/Dec) at or after D's month (q0, same year) and the one after it (q1).
        trading_date - CAST(day(trading_date) - 1 AS INTEGER) AS m0,
        last_day(trading_date) + 1 AS m1,
        make_date(year(trading_date), {{ qm }}, 1) AS q0,
        make_date(year(trading_date) + {{ qm }} // 12, {{ qm }} % 12 + 3, 1) AS q1
    FROM {{ source }}
    WINDOW w AS (PARTITION BY symbol ORDER BY ts)
) AS t
