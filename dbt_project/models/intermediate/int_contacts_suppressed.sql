-- People (by normalized email) who must not receive marketing: an erasure, objection or restriction
-- request received, pending or done (eligibility rule 2). A request counts from the moment it is
-- received, whatever the run's as-of time: a back-dated run (a backfill, a rerun, the demo's sample
-- date) never sends to someone who has since objected. A restriction counts until it is lifted: one
-- in force at the as-of time (received by then, not lifted by then) or one not lifted at all.
with

requests as (

    select
        *,
        {{ try_utc_timestamp(json_text('details', 'lifted_at')) }} as lifted_at

    from {{ ref('stg_crm__dsr_requests') }}

),

suppressed as (

    select
        email,
        bool_or(request_type = 'erasure') as has_erasure_request,
        bool_or(request_type = 'objection') as has_objection,
        bool_or(
            request_type = 'restriction'
            and (
                lifted_at is null
                or (received_at <= {{ as_of() }} and lifted_at > {{ as_of() }})
            )
        ) as has_active_restriction

    from requests
    where request_type in ('erasure', 'objection', 'restriction')
    group by email

)

select * from suppressed
