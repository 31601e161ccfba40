{#-
    The run's as-of time as a naive UTC timestamp: var('as_of') when given (ISO 8601; any offset is
    converted to UTC, a zone-less value is UTC), else the GMP_DBT_AS_OF environment variable (how the
    Airflow DAG passes it: a var that changes per run makes dbt parse the whole project again, an
    env var only the files that read it), else now.
-#}
{% macro as_of() -%}
    {%- set text = var('as_of', none) or env_var('GMP_DBT_AS_OF', '') -%}
    {%- if text -%}
        {{ adapter.dispatch('utc_timestamp_literal', 'governed_marketing')(text) }}
    {%- else -%}
        {{ adapter.dispatch('utc_now', 'governed_marketing')() }}
    {%- endif -%}
{%- endmacro %}

{% macro default__utc_timestamp_literal(text) -%}
    cast(cast('{{ text }}' as timestamptz) at time zone 'UTC' as timestamp)
{%- endmacro %}

{#-
    Postgres reads a zone-less timestamptz literal in the session's TimeZone, which dbt-postgres
    does not set: only a literal with an offset goes through timestamptz; a zone-less one is UTC
    already and becomes a plain timestamp, whatever the server's TimeZone is.
-#}
{% macro postgres__utc_timestamp_literal(text) -%}
    {%- if modules.re.search('[T ][0-9:.]+ *([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$', text | trim) -%}
        (timestamptz '{{ text }}' at time zone 'UTC')
    {%- else -%}
        timestamp '{{ text }}'
    {%- endif -%}
{%- endmacro %}

{% macro default__utc_now() -%}
    cast(current_timestamp at time zone 'UTC' as timestamp)
{%- endmacro %}
