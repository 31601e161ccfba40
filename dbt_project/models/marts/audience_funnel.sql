-- Per campaign: the valid contacts, how many each exclusion reason removed (first reason in rule
-- order, so the numbers add up), and the audience. Evidence for the report.
with

eligibility as (

    select * from {{ ref('int_campaign_eligibility') }}

),

funnel as (

    select
        campaign_id,
        {{ as_of() }} as as_of,
        '{{ var("run_id", none) or env_var("GMP_DBT_RUN_ID", "manual") }}' as run_id,
        count(*) as contacts,
        count(*) filter (where exclusion_reason = 'erasure_requested') as excluded_erasure_requested,
        count(*) filter (where exclusion_reason = 'objection') as excluded_objection,
        count(*) filter (where exclusion_reason = 'restriction') as excluded_restriction,
        count(*) filter (
            where exclusion_reason = 'consent_missing_or_withdrawn'
        ) as excluded_consent_missing_or_withdrawn,
        count(*) filter (where exclusion_reason = 'consent_expired') as excluded_consent_expired,
        count(*) filter (where exclusion_reason = 'under_minimum_age') as excluded_under_minimum_age,
        count(*) filter (where exclusion_reason = 'age_unknown') as excluded_age_unknown,
        count(*) filter (where exclusion_reason = 'duplicate_email') as excluded_duplicate_email,
        count(*) filter (where is_eligible) as audience

    from eligibility
    group by campaign_id

)

select * from funnel
