{#-
  Validate raw bar rows. Input relations: `raw` (loaders.raw.RAW_COLUMNS, values possibly text),
  `symbol_map` (symbol, contract, instrument_id -> new_symbol, new_contract: futures rows get symbol = root and
  contract = the exchange code) and `tick_sizes` (root, tick_size). Output: every row, typed, with `rule` = the first rule it breaks (NULL when
  the row is good) and `detail` = the offending values. Rules, in the order they are checked:
    missing_symbol, bad_symbol, unparseable_timestamp, unparseable_value, price_not_positive_finite,
    volume_not_nonneg_integer, ohlc_inconsistent, ts_not_aligned, price_off_tick_grid, then among the rows
    that pass those: duplicate_key (a repeat of an identical row: the first occurrence in file order stays)
    and duplicate_conflict (rows with the same key but different values: all of them are rejected, and
    the detail lists every variant with its row).
  Parameters: tf_us = the timeframe in microseconds (a bar's ts must be a multiple of it since the epoch);
  timeframe (its name, for messages); ts_is_text (parse `ts` from text with macros.parse_ts);
  daily_convention (1d only, see loaders/daily.py): 'session' = a bar's ts must be the CME session open of a
  weekday trading date (18:00 ET the evening before), else (utc_day) a multiple of 1 day since the epoch;
  daily_label (how the file stamps its daily bars, for messages).
-#}
{%- set values_text -%}
concat_ws(' ', 'open=' || coalesce(CAST(raw_open AS VARCHAR), 'NULL'), 'high=' || coalesce(CAST(raw_high AS VARCHAR), 'NULL'),
          'low=' || coalesce(CAST(raw_low AS VARCHAR), 'NULL'), 'close=' || coalesce(CAST(raw_close AS VARCHAR), 'NULL'),
          'volume=' || coalesce(CAST(raw_volume AS VARCHAR), 'NULL'))
{%- endset %}
{%- set key_text -%}
'(' || symbol || ', ' || coalesce(contract, 'NULL') || ', ' || strftime(ts, '%Y-%m-%d %H:%M:%S') || ')'
{%- endset %}
{% import 'macros.sql' as m_ %}
WITH typed AS (
    SELECT
        _file,
        _row,
        NULLIF(trim(CAST(m.new_symbol AS VARCHAR)), '') AS symbol,
        NULLIF(trim(CAST(m.new_contract AS VARCHAR)), '') AS contract,
        TRY_CAST(r.instrument_id AS BIGINT) AS instrument_id,
{%- if ts_is_text %}
        {{ m_.parse_ts('r.ts') }} AS ts,
{%- else %}
        TRY_CAST(r.ts AS TIMESTAMPTZ) AS ts,
{%- endif %}
        TRY_CAST(open AS DOUBLE) AS open,
        TRY_CAST(high AS DOUBLE) AS high,
        TRY_CAST(low AS DOUBLE) AS low,
        TRY_CAST(close AS DOUBLE) AS close,
        TRY_CAST(volume AS DOUBLE) AS volume,
        TRY_CAST(open_interest AS DOUBLE) AS open_interest,
        -- The values as read, turned into text only for the rows that fail (see `detail`).
        r.ts AS raw_ts,
        r.open AS raw_open,
        r.high AS raw_high,
        r.low AS raw_low,
        r.close AS raw_close,
        r.volume AS raw_volume
    FROM raw AS r
    JOIN symbol_map AS m
      ON m.symbol IS NOT DISTINCT FROM r.symbol
     AND m.contract IS NOT DISTINCT FROM r.contract
     AND m.instrument_id IS NOT DISTINCT FROM r.instrument_id
),
ruled AS (
    SELECT
        t.*,
        k.tick_size,
        CASE
            WHEN t.symbol IS NULL THEN 'missing_symbol'
            -- Symbols name directories (hive partitions): letters, digits, '.', '_' and '-' only.
            WHEN NOT regexp_full_match(t.symbol, '[A-Z0-9][A-Z0-9._-]{0,31}') THEN 'bad_symbol'
            WHEN t.ts IS NULL THEN 'unparseable_timestamp'
            WHEN t.open IS NULL OR t.high IS NULL OR t.low IS NULL OR t.close IS NULL OR t.volume IS NULL
                THEN 'unparseable_value'
            WHEN NOT (isfinite(t.open) AND isfinite(t.high) AND isfinite(t.low) AND isfinite(t.close))
                 OR least(t.open, t.high, t.low, t.close) <= 0
                THEN 'price_not_positive_finite'
            WHEN t.volume < 0 OR t.volume <> floor(t.volume) OR NOT isfinite(t.volume) OR t.volume >= 9.2e18
                 OR (t.open_interest IS NOT NULL AND (t.open_interest < 0 OR t.open_interest <> floor(t.open_interest)
                                                      OR t.open_interest >= 9.2e18))
                THEN 'volume_not_nonneg_integer'
            WHEN t.high < greatest(t.open, t.close) OR t.low > least(t.open, t.close)
                THEN 'ohlc_inconsistent'
{%- if daily_convention == 'session' %}
            WHEN t.ts <> {{ m_.session_open(m_.trading_date('t.ts')) }} OR isodow({{ m_.trading_date('t.ts') }}) > 5
                THEN 'ts_not_aligned'
{%- else %}
            WHEN epoch_us(t.ts) % {{ tf_us }} <> 0 THEN 'ts_not_aligned'
{%- endif %}
            WHEN k.tick_size IS NOT NULL AND greatest(
                     abs(t.open / k.tick_size - round(t.open / k.tick_size)),
                     abs(t.high / k.tick_size - round(t.high / k.tick_size)),
                     abs(t.low / k.tick_size - round(t.low / k.tick_size)),
                     abs(t.close / k.tick_size - round(t.close / k.tick_size))) > 1e-6
                THEN 'price_off_tick_grid'
        END AS first_rule
    FROM typed AS t
    LEFT JOIN tick_sizes AS k ON k.root = t.symbol
),
dup_keys AS (
    -- Keys that more than one otherwise-good row claims. Identical rows are one bar: the first occurrence in
    -- file order stays. Rows that differ cannot be told apart by position (a row stamped in the wrong time
    -- zone lands on a real bar further down the file), so none of them is kept.
    SELECT symbol, coalesce(contract, '') AS contract_key, ts,
           min(struct_pack(f := _file, r := _row)) AS first_at,
           min(open) <> max(open) OR min(high) <> max(high) OR min(low) <> max(low) OR min(close) <> max(close)
               OR min(volume) <> max(volume) OR count(open_interest) NOT IN (0, count(*))
               OR min(open_interest) <> max(open_interest) AS conflict
    FROM ruled
    WHERE first_rule IS NULL
    GROUP BY ALL
    HAVING count(*) > 1
),
conflicts AS (
    -- Every variant of a conflicting key, for the quarantine detail (few rows: only conflicting keys).
    SELECT r.symbol, coalesce(r.contract, '') AS contract_key, r.ts,
           string_agg('row ' || CAST(r._row AS VARCHAR) || ': ' || {{ values_text }}, '; ' ORDER BY r._file, r._row) AS variants
    FROM ruled AS r
    JOIN dup_keys AS d ON d.conflict AND d.symbol = r.symbol AND d.contract_key = coalesce(r.contract, '') AND d.ts = r.ts
    WHERE r.first_rule IS NULL
    GROUP BY ALL
),
ranked AS (
    SELECT
        r.*,
        CASE
            WHEN d.conflict THEN 'duplicate_conflict'
            WHEN struct_pack(f := r._file, r := r._row) <> d.first_at THEN 'duplicate_key'
        END AS dup_rule,
        c.variants
    FROM ruled AS r
    LEFT JOIN dup_keys AS d
      ON r.first_rule IS NULL AND d.symbol = r.symbol AND d.contract_key = coalesce(r.contract, '') AND d.ts = r.ts
    LEFT JOIN conflicts AS c
      ON d.conflict AND c.symbol = r.symbol AND c.contract_key = coalesce(r.contract, '') AND c.ts = r.ts
)
SELECT
    _file,
    _row,
    symbol,
    contract,
    instrument_id,
    ts,
    open,
    high,
    low,
    close,
    TRY_CAST(volume AS BIGINT) AS volume,
    TRY_CAST(open_interest AS BIGINT) AS open_interest,
    coalesce(first_rule, dup_rule) AS rule,
    CASE coalesce(first_rule, dup_rule)
        WHEN 'missing_symbol' THEN 'symbol is empty'
        WHEN 'bad_symbol' THEN 'symbol=' || symbol || ' (letters, digits, ".", "_" and "-" only, at most 32)'
        WHEN 'unparseable_timestamp' THEN 'ts=' || coalesce(CAST(raw_ts AS VARCHAR), 'NULL') || ' is not a timestamp'
        WHEN 'unparseable_value' THEN {{ values_text }} || ' (a value is missing or not a number)'
        WHEN 'price_not_positive_finite' THEN {{ values_text }} || ' (prices must be finite and > 0)'
        WHEN 'volume_not_nonneg_integer' THEN 'volume=' || CAST(volume AS VARCHAR)
            || coalesce(' open_interest=' || CAST(open_interest AS VARCHAR), '') || ' (must be integers >= 0)'
        WHEN 'ohlc_inconsistent' THEN {{ values_text }} || ' (need high >= max(open, close) and low <= min(open, close))'
        WHEN 'ts_not_aligned' THEN 'ts=' || strftime(ts, '%Y-%m-%d %H:%M:%S.%f') || ' UTC is not on the ' || '{{ timeframe }}' || ' grid'
{%- if daily_label %} || ': this file has {{ daily_label }}'{% endif %}
        WHEN 'price_off_tick_grid' THEN {{ values_text }} || ' (not multiples of the ' || symbol || ' tick ' || CAST(tick_size AS VARCHAR) || ')'
        WHEN 'duplicate_key' THEN 'another row has the same (symbol, contract, ts) = ' || {{ key_text }} || ' and the same values'
        WHEN 'duplicate_conflict' THEN 'rows with the same (symbol, contract, ts) = ' || {{ key_text }} || ' disagree, none is kept: '
            || variants
    END AS detail
FROM ranked
