-- One row per cohort cell: the attributes that may be sent to the vendor in cohort mode and how
-- many recipients share them. Every attribute value shown is shared by at least k recipients.
with

assigned as (

    select * from {{ ref('int_audience_cohorts_assigned') }}

),

cohort_policy as (

    select * from {{ ref('stg_governance__cohort_policy') }}

),

cohorts as (

    select
        assigned.campaign_id,
        assigned.cohort_id,
        assigned.generalization_level,
        coalesce(assigned.cohort_language, cohort_policy.fallback_language) as language,  -- noqa: RF04
        assigned.cohort_country as country,
        assigned.cohort_lifecycle_stage as lifecycle_stage,
        assigned.cohort_primary_interest as interest,  -- noqa: RF04
        assigned.cohort_last_purchase_category as last_purchase_category,
        count(*) as member_count

    from assigned
    cross join cohort_policy
    group by
        assigned.campaign_id,
        assigned.cohort_id,
        assigned.generalization_level,
        coalesce(assigned.cohort_language, cohort_policy.fallback_language),
        assigned.cohort_country,
        assigned.cohort_lifecycle_stage,
        assigned.cohort_primary_interest,
        assigned.cohort_last_purchase_category

)

select * from cohorts
