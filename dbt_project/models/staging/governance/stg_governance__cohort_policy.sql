with

source as (

    select * from {{ source('governance', 'cohort_policy') }}

),

renamed as (

    select
        k,
        fallback_language

    from source

)

select * from renamed
