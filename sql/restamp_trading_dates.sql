{#-
  A daily file of bare trading dates (YYYY-MM-DD): each date becomes its CME session open (18:00 ET the
  evening before, in UTC), written as ISO text so validation parses it like any zoned timestamp. Text that is
  not a valid date is kept as it is (validation rejects it as unparseable_timestamp).
  Input relation: `raw` (loaders.raw.RAW_COLUMNS, ts as text).
-#}
{% import 'macros.sql' as m %}
SELECT * REPLACE (
    coalesce(
        strftime({{ m.session_open('TRY_CAST(trim(ts) AS DATE)') }}, '%Y-%m-%dT%H:%M:%S') || 'Z',
        ts
    ) AS ts
)
FROM raw
