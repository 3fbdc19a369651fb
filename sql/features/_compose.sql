{#-
  The whole feature query: the shared base once, every family on top of it, joined on (symbol, ts), and the
  declared outputs in catalog order with their declared types. No NaN or inf reaches the output: a double
  that is not finite becomes NULL (the families already guard every division; this is the last line).
  Parameters: base_sql (base.sql rendered over the bar relation), families (list of rendered family SELECTs
  over `base`), features (FeatureSpec list in catalog order, with .name and .type and .family_index); optional
  states: (family index, filter name) pairs of the families' hidden filter-state columns, output after the
  features as they are (the live path; left undefined, nothing is added).
-#}
{% import 'features/_project.sql' as project %}
WITH base AS (
{{ base_sql }}
){% for family_sql in families %},
f{{ loop.index0 }} AS (
{{ family_sql }}
){% endfor %}
SELECT
    base.symbol,
    base.ts{{ project.columns(features) }}{% if states is defined %}{% for i, name in states %},
    f{{ i }}.__state__{{ name }}{% endfor %}{% endif %}
FROM base
{%- for family_sql in families %}
LEFT JOIN f{{ loop.index0 }} USING (symbol, ts)
{%- endfor %}
ORDER BY base.symbol, base.ts
