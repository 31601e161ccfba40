with

source as (

    select * from {{ source('governance', 'campaigns') }}

),

renamed as (

    select
        campaign_id,
        purpose_id,
        personalization

    from source

)

select * from renamed
