{#-
    The run's as-of time as a naive UTC timestamp: var('as_of') when given (ISO 8601; any offset is
    converted to UTC, a zone-less value is UTC), else the GMP_DBT_AS_OF environment variable (how the
    Airflow DAG passes it: a var that changes per run makes dbt parse the whole project again, an
    env var only the files that read it; set but empty means now). Neither given (an analyst's
    `dbt build`): the last run's as-of, recorded in marts.audience_funnel, so the analyst reproduces
    the audience the pipeline built; now when no run is recorded. `log_as_of()` (on-run-start) says
    which one a run uses.
-#}
{% macro as_of() -%}
    {%- set text = var('as_of', none) or env_var('GMP_DBT_AS_OF', '') -%}
    {%- set last = last_run_as_of() if is_analyst_run() else none -%}
    {%- if text -%}
        {{ adapter.dispatch('utc_timestamp_literal', 'governed_marketing')(text) }}
    {%- elif last -%}
        {{ adapter.dispatch('utc_timestamp_literal', 'governed_marketing')(last) }}
    {%- else -%}
        {{ adapter.dispatch('utc_now', 'governed_marketing')() }}
    {%- endif -%}
{%- endmacro %}

{#- No as_of var and no GMP_DBT_AS_OF at all: not the pipeline, which always sets one (maybe empty). -#}
{% macro is_analyst_run() %}
    {{ return(var('as_of', none) is none and env_var('GMP_DBT_AS_OF', '<unset>') == '<unset>') }}
{% endmacro %}

{#- The as-of time of the last build of marts.audience_funnel (ISO text), or none. -#}
{% macro last_run_as_of() %}
    {%- if not execute -%}{{ return(none) }}{%- endif -%}
    {%- set relation = adapter.get_relation(database=target.database, schema='marts', identifier='audience_funnel') -%}
    {%- if relation is none -%}{{ return(none) }}{%- endif -%}
    {%- set result = run_query('select max(as_of) from ' ~ relation) -%}
    {%- set value = result.columns[0].values()[0] if result.rows | length else none -%}
    {{ return(value.strftime('%Y-%m-%dT%H:%M:%S.%f') if value else none) }}
{% endmacro %}

{#- One log line per dbt command: which as-of time the models are evaluated at, and why. -#}
{% macro log_as_of() %}
    {%- if execute -%}
        {%- set given = var('as_of', none) or env_var('GMP_DBT_AS_OF', '') -%}
        {%- set last = last_run_as_of() if is_analyst_run() else none -%}
        {%- if given -%}
            {{ log('as_of: ' ~ given ~ ' (from the as_of var or GMP_DBT_AS_OF)', info=True) }}
        {%- elif last -%}
            {{ log('as_of: ' ~ last ~ " UTC, the last run's (marts.audience_funnel); pass --vars '{as_of: ...}' for another time", info=True) }}
        {%- else -%}
            {{ log('as_of: now (as given, or no earlier run recorded in marts.audience_funnel)', info=True) }}
        {%- endif -%}
    {%- endif -%}
{% endmacro %}

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
