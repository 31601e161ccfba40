{#-
    Freshness of a CRM source table against governance.yml ingest.freshness (through
    stg_governance__crm_freshness, never copied here): the newest CRM load (ops.crm_loads) that
    brought rows to the table, measured at the as-of time. Older than warn_after_hours warns,
    older than error_after_hours fails (fail_calc picks the level). No threshold or no load: passes.
-#}
{% test loaded_within_policy(model, column_name) %}
{{ config(fail_calc='coalesce(max(staleness), 0)', warn_if='>= 1', error_if='>= 2') }}
{#-
    A warehouse without ops.crm_loads (raw tables loaded another way, e.g. mirrored to Postgres) has
    no load to measure. information_schema, not the relation cache (dbt caches only its own schemas).
-#}
{%- set loads = source('ops', 'crm_loads') -%}
{%- set recorded = execute and run_query(
    "select count(*) from information_schema.tables where table_schema = '" ~ loads.schema
    ~ "' and table_name = '" ~ loads.identifier ~ "'"
).columns[0].values()[0] > 0 -%}

with

newest as (

    {%- if recorded %}
    select max(loads.loaded_at) as loaded_at

    from {{ loads }} as loads
    where loads.load_id in (select distinct {{ column_name }} from {{ model }})
    {%- else %}
    select cast(null as timestamp) as loaded_at
    {%- endif %}

)

select
    newest.loaded_at,
    freshness.warn_after_hours,
    freshness.error_after_hours,
    case
        when newest.loaded_at < {{ as_of() }} - freshness.error_after_hours * interval '1 hour' then 2
        else 1
    end as staleness

from newest
cross join {{ ref('stg_governance__crm_freshness') }} as freshness
where newest.loaded_at < {{ as_of() }} - freshness.warn_after_hours * interval '1 hour'

{% endtest %}
