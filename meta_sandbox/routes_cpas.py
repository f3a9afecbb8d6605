"""Collaborative Ads (CPAS) routes of the sandbox, in Meta's shapes, plus admin knobs for drift tests.

Graph routes
------------
``POST /{business_id}/owned_product_catalogs``
    name, parent_catalog_id, catalog_segment_filter (JSON rule) -> ``{"id"}``: a catalog segment owned by the
    business (without parent_catalog_id: a plain catalog). Error 2310068 when the parent is not Collaborative
    Ads compliant (the seeded ``n11`` parent is not); error 100 naming the clause for a bad filter.
    (``GET`` of that edge and ``GET /{segment_id}`` are served by routes_catalog.)
``GET|POST|DELETE /{catalog_id}/agencies``
    POST business, permitted_tasks [ADVERTISE, MANAGE], utm_settings, enabled_collab_terms -> success. A
    *segment* shared with a brand stays pending (in share settings, not in agencies) until the brand accepts
    it in Collaboration Center (admin knob ``accept``; or ``auto_accept_shares``). GET lists accepted shares:
    id, name, permitted_tasks, enabled_collab_terms, access_status. DELETE ?business= unshares.
``GET /{catalog_id}/collaborative_ads_share_settings``
    every share (pending or accepted): id, agency_business{id,name}, utm_campaign, utm_medium, utm_source.
``GET|POST|DELETE /{catalog_id}/assigned_users``  user, tasks [MANAGE, ADVERTISE, MANAGE_AR, AA_ANALYZE].
``GET /{business_id}/cpas_business_setup_config``; ``GET /{ad_account_id}/collaborative_ads_partner_businesses``
    the brand's Collaborative Ads ad accounts and the retailer each is dedicated to (routes_cpas_accounts).
``GET /collaborative_ads_directory?fields=collaborative_ads_merchants``
    -> ``{"collaborative_ads_merchants": {"data": [{id, name, countries}], "paging"}}``; the nested page's
    ``next`` continues at ``/collaborative_ads_directory/collaborative_ads_merchants``.
``GET /{business_id}?fields=collaborative_ads_suggested_partners`` and the edge
``GET /{business_id}/collaborative_ads_suggested_partners``; ``GET /{recommendation_id}``
    CPASAdvertiserPartnershipRecommendation: id, advertiser_business_id, brand_business_id, brands, countries,
    merchant_business_id, merchant_categories, status, status_reason.
``POST|GET /{business_id}/collaborative_ads_collaboration_requests``; ``GET /{request_id}``
    brands, contact_email, contact_first_name, contact_last_name, phone_number, receiver_business,
    requester_agency_or_brand -> ``{"id"}``; status PENDING -> APPROVED after ``request_approval_seconds`` of
    world time (or an admin-set status such as DECLINED).
``POST|GET /{catalog_id}/product_sets``; ``GET|POST|DELETE /{product_set_id}``
    name, filter (JSON rule), metadata (cover_image_url, external_url, description), publish_to_shops.
    GET fields: id, name, filter (JSON text, as Meta returns it), product_count, latest_metadata,
    product_catalog. DELETE refuses a *live* set (used by an ad set/ad that is not deleted, published to a
    shop, or forced live) unless allow_live_product_set_deletion=true.

How product counts are modelled
-------------------------------
A retailer's parent catalog *carries* the catalogs of the brands selling on it (``Catalog.carried_catalog_ids``,
seeded from the registry): its items are those brands' catalog items, which Kobi's feed uploads fill. A
segment's ``product_count`` is the number of those items matching the segment filter (evaluated with
``kobi_cpas.registry.filters``, the same semantics Kobi uses on its feed snapshot), so after the brand's feed is
uploaded Meta's count equals Kobi's expected count. While none of the carried catalogs has items the seeded
count is served. The ``product_count`` admin knob forces a value (0 = the segment went empty).

Admin knobs (``/__sandbox/cpas/...``, JSON bodies; client: ``SandboxAdmin.cpas``)
--------------------------------------------------------------------------------
``POST /cpas/segments/<id>/accept {"business"}``  the brand accepts the shared segment (Collaboration Center).
``POST /cpas/segments/<id>/unshare {"business"}``  the retailer stops sharing (like DELETE agencies).
``POST /cpas/catalogs/<id>/product_count {"count": int|null}``  force/clear a product count.
``POST /cpas/catalogs/<id>/compliance {"compliant": bool}``  flip a parent's Collaborative Ads compliance.
``POST /cpas/catalogs/<id>/items {"items": [...], "replace": bool}``  load items into a (brand) catalog.
``DELETE /cpas/catalogs/<id>``  delete a catalog or segment (with its shares and product sets).
``DELETE /cpas/ad_accounts/<act_id>``  delete an ad account with its campaigns, ad sets, ads and creatives.
``POST /cpas/ad_accounts/<act_id>/campaigns {"name", "segment_id", "status"?}``  inject a campaign bypassing
    the one-retailer-per-account rule (a legacy/mixed account).
``POST /cpas/ads/<id>/patch {"creative"?, "tracking_specs"?, "status"?}``  edit an ad outside the API rules.
``POST /cpas/product_sets/<id>/live {"live": bool|null}``  force a product set live / not live.
``POST /cpas/collaboration_requests/<id>/status {"status"}``  answer a collaboration request.
``POST /cpas/ad_accounts/<act_id>/dedicate {"business", "partner_business"}``  the brand links an ad account
    (created if needed) to a retailer, as in Collaboration Center.
``GET|POST /cpas/config {"auto_accept_shares", "request_approval_seconds"}``.

Modules: ``cpas_common`` (constants, parameters, field renderers), ``routes_cpas_segments`` (segments and
sharing), ``routes_cpas_directory`` (directory, partners, collaboration requests), ``routes_cpas_product_sets``
and ``routes_cpas_admin`` (the knobs).
"""

from __future__ import annotations

from meta_sandbox import (
    routes_cpas_accounts,
    routes_cpas_admin,
    routes_cpas_directory,
    routes_cpas_product_sets,
    routes_cpas_segments,
)
from meta_sandbox.cpas_common import SEGMENT_NOT_COMPLIANT_CODE
from meta_sandbox.routes_cpas_admin import delete_ad_account, delete_catalog
from meta_sandbox.server import Router


def register(router: Router) -> None:
    # A later node handler replaces an earlier one (GET /{business} here wraps routes_catalog's): keep the order.
    routes_cpas_segments.register_segments(router)
    routes_cpas_segments.register_sharing(router)
    routes_cpas_directory.register(router)
    routes_cpas_product_sets.register(router)
    routes_cpas_admin.register(router)
    routes_cpas_accounts.register(router)


__all__ = [
    "SEGMENT_NOT_COMPLIANT_CODE",
    "delete_ad_account",
    "delete_catalog",
    "register",
]
