{#- Shared expressions. Import with {% import 'macros.sql' as m %}. -#}

{#- CME trading date of a UTC timestamp: the America/New_York date, plus one day from 18:00 ET on.
    Adding 6 hours to the ET wall time moves exactly the 18:00-24:00 part onto the next date. -#}
{% macro trading_date(ts) -%}
CAST(timezone('America/New_York', {{ ts }}) + INTERVAL 6 HOUR AS DATE)
{%- endmacro %}

{#- Session open (18:00 ET on the previous calendar day) of a trading date, as TIMESTAMPTZ (UTC). -#}
{% macro session_open(trading_date) -%}
timezone('America/New_York', CAST({{ trading_date }} AS TIMESTAMP) - INTERVAL 6 HOUR)
{%- endmacro %}
