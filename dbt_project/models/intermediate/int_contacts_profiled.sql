-- Contacts with what eligibility and cohorts need: age at the as-of date against the minimum age
-- of their country (governance.yml minimum_age), and the category of their latest purchase.
with

contacts as (

    select * from {{ ref('stg_crm__contacts') }}

),

minimum_ages as (

    select * from {{ ref('stg_governance__minimum_ages') }}

),

age_policy as (

    select * from {{ ref('stg_governance__age_policy') }}

),

purchases as (

    select
        contact_id,
        product_category,
        row_number() over (partition by contact_id order by occurred_at desc, activity_id desc) as recency_rank

    from {{ ref('int_activities_deduplicated') }}
    where
        activity_type = 'purchase'
        and product_category is not null
        and occurred_at <= {{ as_of() }}

),

profiled as (

    select
        contacts.contact_id,
        contacts.email,
        contacts.country,
        contacts.language,
        contacts.lifecycle_stage,
        contacts.interests,
        contacts.primary_interest,
        purchases.product_category as last_purchase_category,
        contacts.updated_at,
        case
            when contacts.birth_date is not null
                then {{ age_in_years('contacts.birth_date', 'cast(' ~ as_of() ~ ' as date)') }}
        end as age_years,
        coalesce(minimum_ages.minimum_age, age_policy.default_minimum_age) as minimum_age,
        age_policy.include_unknown_age

    from contacts
    cross join age_policy
    left join minimum_ages
        on contacts.country = minimum_ages.country
    left join purchases
        on
            contacts.contact_id = purchases.contact_id
            and purchases.recency_rank = 1

)

select * from profiled
