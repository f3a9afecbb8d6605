"""Pure (no Dagster) stateful fake of the Meta Graph API, served over real HTTP on loopback."""

from kobi_cpas.sandbox.admin import SandboxAdmin, SandboxAdminError
from kobi_cpas.sandbox.errors import GraphError
from kobi_cpas.sandbox.faults import FAULT_KINDS, FaultInjector, FaultSpecError
from kobi_cpas.sandbox.reference import REFERENCE_FIXTURES, load_fixture
from kobi_cpas.sandbox.server import (
    RequestContext,
    Route,
    Router,
    SandboxApp,
    SandboxServer,
    default_router,
)
from kobi_cpas.sandbox.state import NODE_KINDS, AdAccount, Business, Catalog, ExternalEventSource, World

__all__ = [
    "FAULT_KINDS",
    "NODE_KINDS",
    "REFERENCE_FIXTURES",
    "AdAccount",
    "Business",
    "Catalog",
    "ExternalEventSource",
    "FaultInjector",
    "FaultSpecError",
    "GraphError",
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
