"""The collaboration request, launched from the UI: a brand asks a retailer to run Collaborative Ads with it."""

import dagster as dg
from pydantic import Field

from kobi_cpas.cpas import send_collaboration_request
from kobi_cpas.resources import MetaGraphResource, TenantRegistryResource

REQUESTERS = ("AGENCY", "BRAND", "MERCHANT")
RECOMMENDATION_FIELDS = "id,merchant_business_id,brands,countries,status,status_reason"


class CollaborationRequestConfig(dg.Config):
    tenant_id: str = Field(description="Kobi tenant (the brand)")
    recommendation_id: str | None = Field(
        default=None,
        description="A suggested partner (cpas_retailer_directory, source 'suggested', object_id): gives the "
        "retailer and the brands",
    )
    receiver_business_id: str | None = Field(
        default=None, description="The retailer's business id (when no recommendation is given)"
    )
    brands: list[str] = Field(
        default=[], description="Brand names (default: the recommendation's, else the tenant's name)"
    )
    contact_email: str = Field(description="Who the retailer should contact")
    contact_first_name: str
    contact_last_name: str
    phone_number: str
    requester_agency_or_brand: str = Field(default="AGENCY", description="AGENCY, BRAND or MERCHANT")


@dg.op(
    description="Send the collaboration request unless an open one to the same retailer exists (never twice); "
    "a recommendation id is read from Meta to name the retailer and brands."
)
def send_collaboration_request_op(
    context: dg.OpExecutionContext,
    config: CollaborationRequestConfig,
    registry: TenantRegistryResource,
    meta: MetaGraphResource,
) -> dict:
    _, tenant = registry.tenant(config.tenant_id)
    where = f"tenant '{tenant.tenant_id}'"
    if config.requester_agency_or_brand not in REQUESTERS:
        raise dg.Failure(
            description=f"{where}, config field 'requester_agency_or_brand': one of {', '.join(REQUESTERS)} "
            f"(got {config.requester_agency_or_brand!r})"
        )
    with meta.get_client(logger=context.log) as client:
        receiver, brands = config.receiver_business_id, list(config.brands)
        if config.recommendation_id:
            rec = client.get(config.recommendation_id, {"fields": RECOMMENDATION_FIELDS})
            receiver = receiver or str(rec.get("merchant_business_id") or "") or None
            brands = brands or [str(b) for b in rec.get("brands") or []]
            context.log.info(
                f"recommendation {config.recommendation_id}: retailer business {receiver}, status "
                f"{rec.get('status')}"
            )
        if not receiver:
            raise dg.Failure(
                description=f"{where}: give recommendation_id or receiver_business_id (the retailer's business)"
            )
        request_id, sent = send_collaboration_request(
            client,
            tenant,
            receiver_business_id=receiver,
            brands=brands or [tenant.name or tenant.tenant_id],
            contact_email=config.contact_email,
            contact_first_name=config.contact_first_name,
            contact_last_name=config.contact_last_name,
            phone_number=config.phone_number,
            requester_agency_or_brand=config.requester_agency_or_brand,
        )
    context.log.info(
        f"collaboration request {request_id} to business {receiver} "
        f"{'sent' if sent else 'already open (nothing sent)'}; its status shows in cpas_retailer_directory"
    )
    context.add_output_metadata(
        {"request_id": request_id, "sent_now": sent, "receiver_business_id": receiver}
    )
    return {"request_id": request_id, "sent": sent}


@dg.job(
    description="Ask a retailer to collaborate on behalf of a brand (never twice while a request is open).",
    tags={"kobi/domain": "cpas"},
)
def send_collaboration_request_job():
    send_collaboration_request_op()
