-- People (by normalized email) who must not receive marketing at the as-of time: an erasure,
-- objection or restriction request received, pending or done (eligibility rule 2). A restriction
-- stops counting once it is lifted (details.lifted_at at or before the as-of time).
with

requests as (

    select
        *,
        {{ try_utc_timestamp(json_text('details', 'lifted_at')) }} as lifted_at

    from {{ ref('stg_crm__dsr_requests') }}
    where received_at <= {{ as_of() }}

),

suppressed as (

    select
        email,
        bool_or(request_type = 'erasure') as has_erasure_request,
        bool_or(request_type = 'objection') as has_objection,
        bool_or(
            request_type = 'restriction'
            and (lifted_at is null or lifted_at > {{ as_of() }})
        ) as has_active_restriction

    from requests
    where request_type in ('erasure', 'objection', 'restriction')
    group by email

)

select * from suppressed
