-- noqa: disable=LT02
-- (Jinja loops below unroll one set of CTEs per generalization level; indentation follows the loop.)
-- Each eligible recipient assigned to one cohort cell of at least k recipients (k-anonymity for
-- what is sent to the vendor). Cells are formed from the finest attributes first; recipients left
-- in cells smaller than k move to the next level, which drops one more attribute in the order of
-- governance.yml cohorts.generalize. The last level keeps no attribute at all, so it reveals
-- nothing even when it holds fewer than k people.
{%- set columns = {
    'language': 'language',
    'country': 'country',
    'lifecycle_stage': 'lifecycle_stage',
    'interests': 'primary_interest',
    'last_purchase_category': 'last_purchase_category',
} %}
{#-
    The drop order is data (stg_governance__cohort_generalization, a ref), not read at compile time:
    dbt sees the dependency and unit tests mock it. One level per attribute the audience carries is
    unrolled; an attribute of drop_rank r is shown below level r, an attribute not listed is never
    shown, and level `levels` (the number of listed attributes) assigns whoever is left.
-#}
{%- set levels = columns | length %}

with

members as (

    select
        eligibility.campaign_id,
        {{ pseudonymize('profiled.email') }} as recipient_pseudonym,
        profiled.language,
        profiled.country,
        profiled.lifecycle_stage,
        profiled.primary_interest,
        profiled.last_purchase_category

    from {{ ref('int_campaign_eligibility') }} as eligibility
    inner join {{ ref('int_contacts_profiled') }} as profiled
        on eligibility.contact_id = profiled.contact_id
    where eligibility.is_eligible

),

cohort_policy as (

    select
        cohort_policy.k,
        {%- for attribute in columns %}
        max(case when generalization.attribute = '{{ attribute }}' then generalization.drop_rank end)
            as {{ attribute }}_drop_rank,
        {%- endfor %}
        count(generalization.attribute) as levels

    from {{ ref('stg_governance__cohort_policy') }} as cohort_policy
    left join {{ ref('stg_governance__cohort_generalization') }} as generalization on 1 = 1
    group by cohort_policy.k

),

remaining_0 as (

    select * from members

),
{%- for level in range(levels + 1) %}

shown_{{ level }} as (

    select
        remaining_{{ level }}.*,
        {{ level }} as generalization_level,
        {%- for attribute, column in columns.items() %}
        case
            when cohort_policy.{{ attribute }}_drop_rank > {{ level }} then remaining_{{ level }}.{{ column }}
        end as cohort_{{ column }}{{ "," if not loop.last }}
        {%- endfor %}

    from remaining_{{ level }}
    cross join cohort_policy

),

cells_{{ level }} as (

    select
        shown_{{ level }}.*,
        count(*) over (
            partition by
                shown_{{ level }}.campaign_id
                {%- for column in columns.values() %},
                shown_{{ level }}.cohort_{{ column }}
                {%- endfor %}
        ) as cell_size

    from shown_{{ level }}

),

assigned_{{ level }} as (

    select cells_{{ level }}.*
    from cells_{{ level }}
    cross join cohort_policy
    where cells_{{ level }}.cell_size >= cohort_policy.k or cohort_policy.levels <= {{ level }}

),
{%- if level < levels %}

remaining_{{ level + 1 }} as (

    select members.*
    from remaining_{{ level }} as members
    left join assigned_{{ level }} as assigned
        on
            members.campaign_id = assigned.campaign_id
            and members.recipient_pseudonym = assigned.recipient_pseudonym
    where assigned.recipient_pseudonym is null

),
{%- endif %}
{%- endfor %}

assigned as (
    {%- for level in range(levels + 1) %}

    select * from assigned_{{ level }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}

),

final as (

    select
        campaign_id,
        recipient_pseudonym,
        campaign_id || ':' || {{ short_hash(
            "cast(generalization_level as varchar) || '|' || coalesce(cohort_language, '-') || '|' "
            ~ "|| coalesce(cohort_country, '-') || '|' || coalesce(cohort_lifecycle_stage, '-') || '|' "
            ~ "|| coalesce(cohort_primary_interest, '-') || '|' || coalesce(cohort_last_purchase_category, '-')"
        ) }} as cohort_id,
        generalization_level,
        cohort_language,
        cohort_country,
        cohort_lifecycle_stage,
        cohort_primary_interest,
        cohort_last_purchase_category

    from assigned

)

select * from final
