-- The consent state per contact and consent purpose at the as-of time, with the proof of the
-- deciding event (Art. 7(1)): the latest event wins; on equal occurred_at, withdraw wins;
-- a duplicated event_id counts once (int_consent_events_deduplicated).
with

events as (

    select * from {{ ref('int_consent_events_deduplicated') }}
    where occurred_at <= {{ as_of() }}

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

    from events

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
