-- Who receives which campaign, minimized: the purpose's allow-listed fields and a keyed
-- pseudonym, never identity. This is what the generation stage may read.
with

eligible as (

    select * from {{ ref('int_campaign_eligibility') }}
    where is_eligible

),

profiled as (

    select * from {{ ref('int_contacts_profiled') }}

),

cohorts as (

    select * from {{ ref('int_audience_cohorts_assigned') }}

),

audience as (

    select
        eligible.campaign_id,
        cohorts.recipient_pseudonym,
        cohorts.cohort_id,
        profiled.language,
        profiled.country,
        profiled.lifecycle_stage,
        profiled.interests,
        profiled.last_purchase_category

    from eligible
    inner join profiled
        on eligible.contact_id = profiled.contact_id
    inner join cohorts
        on
            eligible.campaign_id = cohorts.campaign_id
            and {{ pseudonymize('eligible.email') }} = cohorts.recipient_pseudonym

)

select * from audience
