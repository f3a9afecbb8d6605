from kobi_cpas.registry.loader import (
    LoadedRegistry,
    RegistryError,
    RegistryProblem,
    load_registry,
    registry_path,
)
from kobi_cpas.registry.models import CpasRetailer, OnboardingMode, PartnershipStatus, Registry, Tenant

__all__ = [
    "CpasRetailer",
    "LoadedRegistry",
    "OnboardingMode",
    "PartnershipStatus",
    "Registry",
    "RegistryError",
    "RegistryProblem",
    "Tenant",
    "load_registry",
    "registry_path",
]
