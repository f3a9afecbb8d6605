"""Pure (no Dagster) stateful fake of the Meta Graph API, served over real HTTP on loopback.

Layout:

- world: ``nodes`` (the Graph objects), ``state`` (``World``, clock; re-exports ``nodes``), ``seeding``
  (populating a world from the registry), ``retailer_items``;
- HTTP: ``routing`` (``Router``), ``context`` (``RequestContext``, paging), ``server`` (WSGI app, server;
  re-exports both), ``fields``, ``errors``, ``faults``;
- models: ``catalog_model/`` (feeds, uploads, batches, item problems; error types in ``data/error_types.json``),
  ``insights_model/`` (Ads Insights numbers, queries, report runs); product filters are
  ``kobi_cpas.registry.filters``;
- routes: ``routes_admin``, ``routes_catalog``, ``routes_ads`` (+ ``ads_rules``), ``routes_feeds``,
  ``routes_batch``, ``routes_diagnostics``, ``routes_insights``, ``routes_cpas`` (+ ``cpas_common``,
  ``routes_cpas_segments``, ``routes_cpas_directory``, ``routes_cpas_product_sets``, ``routes_cpas_admin``);
- client: ``admin.SandboxAdmin`` (with ``.cpas`` and ``.insights``).
"""

from meta_sandbox.admin import CpasAdmin, InsightsAdmin, SandboxAdmin, SandboxAdminError
from meta_sandbox.errors import GraphError
from meta_sandbox.faults import FAULT_KINDS, FaultInjector, FaultSpecError
from meta_sandbox.reference import REFERENCE_FIXTURES, load_fixture
from meta_sandbox.server import (
    RequestContext,
    Route,
    Router,
    SandboxApp,
    SandboxServer,
    default_router,
)
from meta_sandbox.state import NODE_KINDS, AdAccount, Business, Catalog, ExternalEventSource, World

__all__ = [
    "FAULT_KINDS",
    "NODE_KINDS",
    "REFERENCE_FIXTURES",
    "AdAccount",
    "Business",
    "Catalog",
    "CpasAdmin",
    "ExternalEventSource",
    "FaultInjector",
    "FaultSpecError",
    "GraphError",
    "InsightsAdmin",
    "RequestContext",
    "Route",
    "Router",
    "SandboxAdmin",
    "SandboxAdminError",
    "SandboxApp",
    "SandboxServer",
    "World",
    "default_router",
    "load_fixture",
]
