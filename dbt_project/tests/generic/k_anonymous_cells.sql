{#-
    k-anonymity of cohort cells: every cell (campaign, cohort_id) that shows at least one attribute
    holds at least k members, k read from stg_governance__cohort_policy (governance.yml cohorts.k,
    never copied here). Returns the offending cells.
-#}
{% test k_anonymous_cells(model, cell_columns, attribute_columns) %}

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
cross join {{ ref('stg_governance__cohort_policy') }} as cohort_policy
where cells.member_count < cohort_policy.k

{% endtest %}
