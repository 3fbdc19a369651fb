{#-
  The final projection of a staged feature build: every family was computed on its own over the stored base
  and written to Parquet in (symbol, ts) order, one row per base row; this SELECT puts the files side by side
  (POSITIONAL JOIN: row k of every file is the same bar) and emits the declared outputs in catalog order with
  their declared types, non-finite doubles as NULL (as _compose.sql does for the single-query build).
  Parameters: files (Parquet paths of the families, in family order), features (FeatureSpec list in catalog
  order, with .name, .type and .family_index).
-#}
{% import 'features/_project.sql' as project %}
SELECT
    f0.symbol,
    f0.ts{{ project.columns(features) }}
FROM read_parquet('{{ files[0] }}') AS f0
{%- for path in files[1:] %}
POSITIONAL JOIN read_parquet('{{ path }}') AS f{{ loop.index }}
{%- endfor %}
