with

source as (

    select * from {{ source('governance', 'crm_freshness') }}

),

renamed as (

    select
        warn_after_hours,
        error_after_hours

    from source

)

select * from renamed
