-- The local key from pseudonym back to contact, used only on our side to merge names and emails
-- into the outbox after content comes back. Never read by anything that talks to a vendor.
with

eligible as (

    select * from {{ ref('int_campaign_eligibility') }}
    where is_eligible

),

recipients as (

    select
        campaign_id,
        {{ pseudonymize('email') }} as recipient_pseudonym,
        contact_id

    from eligible

)

select * from recipients
