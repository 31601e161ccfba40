-- The consent state per contact and consent purpose at the as-of time, with the proof of the
-- deciding event (Art. 7(1)): the latest event wins; on equal occurred_at, withdraw wins;
-- a duplicated event_id counts once.
with

events as (

    select * from {{ ref('stg_crm__consent_events') }}
    where
        occurred_at <= {{ as_of() }}
        and consent_action in ('grant', 'withdraw')

),

deduplicated as (

    select
        *,
        row_number() over (partition by event_id order by occurred_at asc, consent_action desc) as event_copy

    from events

),

ranked as (

    select
        *,
        row_number() over (
            partition by contact_id, consent_purpose
            order by
                occurred_at desc,
                case when consent_action = 'withdraw' then 0 else 1 end,
                event_id desc
        ) as recency_rank

    from deduplicated
    where event_copy = 1

),

latest as (

    select
        contact_id,
        consent_purpose,
        consent_action as latest_action,
        occurred_at as decided_at,
        event_id as deciding_event_id,
        consent_source as deciding_source,
        notice_version as deciding_notice_version

    from ranked
    where recency_rank = 1

)

select * from latest
