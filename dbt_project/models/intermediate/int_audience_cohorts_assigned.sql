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
{%- set drop_order = [] %}
{%- if execute %}
    {%- set rows = run_query(
        "select attribute from " ~ source('governance', 'cohort_generalization') ~ " order by drop_rank"
    ) %}
    {%- for attribute in rows.columns[0].values() %}
        {%- if attribute not in columns %}
            {{ exceptions.raise_compiler_error(
                "governance.yml cohorts.generalize names " ~ attribute ~ ", which the audience does not carry"
            ) }}
        {%- endif %}
        {%- do drop_order.append(attribute) %}
    {%- endfor %}
{%- endif %}
{%- set levels = drop_order | length %}

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

    select k from {{ source('governance', 'cohort_policy') }}

),

remaining_0 as (

    select * from members

),
{%- for level in range(levels + 1) %}
{%- set kept = drop_order[level:] %}

cells_{{ level }} as (

    select
        remaining_{{ level }}.*,
        {{ level }} as generalization_level,
        {%- for attribute, column in columns.items() %}
        {%- if attribute in kept %}
        remaining_{{ level }}.{{ column }} as cohort_{{ column }},
        {%- else %}
        cast(null as varchar) as cohort_{{ column }},
        {%- endif %}
        {%- endfor %}
        count(*) over (
            partition by
                remaining_{{ level }}.campaign_id
                {%- for attribute in kept %},
                remaining_{{ level }}.{{ columns[attribute] }}
                {%- endfor %}
        ) as cell_size

    from remaining_{{ level }}

),

assigned_{{ level }} as (

    select cells_{{ level }}.*
    from cells_{{ level }}
    cross join cohort_policy
    {%- if level < levels %}
    where cells_{{ level }}.cell_size >= cohort_policy.k
    {%- endif %}

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
