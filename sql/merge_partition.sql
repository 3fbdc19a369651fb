{#-
  Merge new rows into a stored partition. Relations: new_rows, old_rows (same columns, keyed by contract, ts).
  Binds $source when `stale` is true: the file being ingested (rows from it carry `source` = the path, or
  path::member for zips); with `stale` false (live appends) no stored row counts as this file's, none is dropped.
  Parameters: value_columns (compared to tell unchanged rows), stale, mode:
    'stats' -> one row: unchanged (same key, same values), replaced_other (same key, other values, stored from
               another file), stale (stored from this file earlier, absent from it now);
    'rows'  -> the merged partition: every new row, plus stored rows whose key is not new, except this
               file's stale rows (a corrected file replaces what it loaded before), sorted by (contract, ts).
-#}
{%- set same -%}
{% for c in value_columns %}o.{{ c }} IS NOT DISTINCT FROM n.{{ c }}{{ " AND " if not loop.last }}{% endfor %}
{%- endset -%}
{%- set from_this_file -%}
{%- if stale -%}(o.source = $source OR starts_with(o.source, $source || '::')){%- else -%}false{%- endif -%}
{%- endset -%}
{%- if mode == 'stats' %}
SELECT
    (SELECT count(*) FROM new_rows n JOIN old_rows o ON o.contract IS NOT DISTINCT FROM n.contract AND o.ts = n.ts
     WHERE {{ same }}) AS unchanged,
    (SELECT count(*) FROM new_rows n JOIN old_rows o ON o.contract IS NOT DISTINCT FROM n.contract AND o.ts = n.ts
     WHERE NOT ({{ same }}) AND NOT {{ from_this_file }}) AS replaced_other,
    (SELECT count(*) FROM old_rows o ANTI JOIN new_rows n ON o.contract IS NOT DISTINCT FROM n.contract AND o.ts = n.ts
     WHERE {{ from_this_file }}) AS stale
{%- else %}
SELECT * FROM new_rows
UNION ALL
SELECT o.* FROM old_rows o ANTI JOIN new_rows n ON o.contract IS NOT DISTINCT FROM n.contract AND o.ts = n.ts
WHERE NOT {{ from_this_file }}
ORDER BY contract, ts
{%- endif %}
