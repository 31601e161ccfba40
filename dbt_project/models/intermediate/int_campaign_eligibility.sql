-- One row per campaign and contact: one boolean per exclusion reason, the first reason in rule
-- order, and whether the contact receives the campaign (DESIGN.md eligibility rules 2-5).
-- Rules 2 and 3 are re-checked independently, on purpose, in governed_marketing/consent.py just
-- before content leaves; a rule change changes both (tests/unit/test_consent.py holds them together).
with

campaigns as (

    select
        campaigns.campaign_id,
        campaigns.purpose_id,
        purposes.consent_max_age_days

    from {{ ref('stg_governance__campaigns') }} as campaigns
    inner join {{ ref('stg_governance__purposes') }} as purposes
        on campaigns.purpose_id = purposes.purpose_id

),

contacts as (

    select * from {{ ref('int_contacts_profiled') }}

),

campaign_contacts as (

    select
        campaigns.campaign_id,
        campaigns.purpose_id,
        campaigns.consent_max_age_days,
        contacts.*

    from campaigns
    cross join contacts

),

consent_status as (

    select
        campaign_contacts.campaign_id,
        campaign_contacts.contact_id,
        bool_or(
            consents.latest_action is null or consents.latest_action = 'withdraw'
        ) as lacks_consent,
        bool_or(
            consents.latest_action = 'grant'
            and consents.decided_at < {{ as_of() }} - campaign_contacts.consent_max_age_days * interval '1 day'
        ) as has_expired_consent

    from campaign_contacts
    inner join {{ ref('stg_governance__purpose_consents') }} as required
        on campaign_contacts.purpose_id = required.purpose_id
    left join {{ ref('int_consents_latest') }} as consents
        on
            campaign_contacts.contact_id = consents.contact_id
            and required.consent_purpose = consents.consent_purpose
    group by campaign_contacts.campaign_id, campaign_contacts.contact_id

),

flagged as (

    select
        campaign_contacts.campaign_id,
        campaign_contacts.contact_id,
        campaign_contacts.email,
        campaign_contacts.updated_at,
        coalesce(suppressed.has_erasure_request, false) as is_erasure_requested,
        coalesce(suppressed.has_objection, false) as is_objecting,
        coalesce(suppressed.has_active_restriction, false) as is_restricted,
        coalesce(consent_status.lacks_consent, false) as lacks_consent,
        coalesce(consent_status.has_expired_consent, false)
        and not coalesce(consent_status.lacks_consent, false) as has_expired_consent,
        coalesce(campaign_contacts.age_years < campaign_contacts.minimum_age, false) as is_under_minimum_age,
        campaign_contacts.age_years is null and not campaign_contacts.include_unknown_age as is_age_unknown_excluded

    from campaign_contacts
    left join {{ ref('int_contacts_suppressed') }} as suppressed
        on campaign_contacts.email = suppressed.email
    left join consent_status
        on
            campaign_contacts.campaign_id = consent_status.campaign_id
            and campaign_contacts.contact_id = consent_status.contact_id

),

ranked as (

    select
        *,
        not(
            is_erasure_requested or is_objecting or is_restricted or lacks_consent
            or has_expired_consent or is_under_minimum_age or is_age_unknown_excluded
        ) as passes_rules,
        row_number() over (
            partition by
                campaign_id,
                email,
                not (
                    is_erasure_requested or is_objecting or is_restricted or lacks_consent
                    or has_expired_consent or is_under_minimum_age or is_age_unknown_excluded
                )
            order by updated_at desc, {{ numeric_id('contact_id') }} desc nulls last, contact_id desc
        ) as email_rank

    from flagged

),

decided as (

    select
        campaign_id,
        contact_id,
        email,
        is_erasure_requested,
        is_objecting,
        is_restricted,
        lacks_consent,
        has_expired_consent,
        is_under_minimum_age,
        is_age_unknown_excluded,
        passes_rules and email_rank > 1 as is_duplicate_email,
        passes_rules and email_rank = 1 as is_eligible,
        case
            when is_erasure_requested then 'erasure_requested'
            when is_objecting then 'objection'
            when is_restricted then 'restriction'
            when lacks_consent then 'consent_missing_or_withdrawn'
            when has_expired_consent then 'consent_expired'
            when is_under_minimum_age then 'under_minimum_age'
            when is_age_unknown_excluded then 'age_unknown'
            when email_rank > 1 then 'duplicate_email'
        end as exclusion_reason

    from ranked

)

select * from decided
