{#-
    k-anonymity of cohort cells: every cell (campaign, cohort_id) that shows at least one attribute
    holds at least k members, k read from stg_governance__cohort_policy (governance.yml cohorts.k,
    never copied here). Returns the offending cells. The policy view is looked up, not ref'd: a
    ref would give the test a second parent, and Cosmos (one task per model) would run it with the
    staging view's task, before the cohort model exists.
-#}
{% test k_anonymous_cells(model, cell_columns, attribute_columns) %}
{%- set policy = adapter.get_relation(
    database=target.database, schema='staging', identifier='stg_governance__cohort_policy'
) if execute else none -%}
{%- if execute and policy is none -%}
    {{ exceptions.raise_compiler_error('k_anonymous_cells: stg_governance__cohort_policy is not built') }}
{%- endif %}

with

cells as (

    select
        {{ cell_columns | join(', ') }},
        count(*) as member_count

    from {{ model }}
    where coalesce({{ attribute_columns | join(', ') }}) is not null
    group by {{ cell_columns | join(', ') }}

)

select cells.*
from cells
cross join {{ policy }} as cohort_policy
where cells.member_count < cohort_policy.k

{% endtest %}
