"""Product sets as a tenant declares them in the registry: the name, Meta rule, metadata and target that
kobi_cpas.cpas.product_sets reconciles with Meta. They live with the registry, which validates them at load."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kobi_cpas.registry.filters import validate_rule

MANAGED_PREFIX = "Kobi | "
CATALOG_TARGET = "catalog"


class ProductSetMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cover_image_url: str | None = None
    external_url: str | None = None
    description: str | None = None

    def as_meta(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class DeclaredProductSet(BaseModel):
    """One product set a tenant wants on Meta."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    filter: dict[str, Any] | None = Field(default=None, description="Meta rule; None = every product")
    metadata: ProductSetMetadata | None = None
    target: str = Field(default=CATALOG_TARGET, description="'catalog' or a retailer name (its segment)")
    allow_live_deletion: bool = Field(
        default=False, description="delete even while an ad or shop uses it (allow_live_product_set_deletion)"
    )
    absent: bool = Field(default=False, description="the set must not exist: delete it (with the flag above)")
    publish_to_shops: tuple[Annotated[str, Field(pattern=r"^[0-9]{1,32}$")], ...] = Field(
        default=(),
        description="ids of the brand's shops that show the set as a collection (Meta's publish_to_shops); "
        "empty: Kobi leaves the set's shops as they are",
    )

    @field_validator("filter")
    @classmethod
    def _rule(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else validate_rule(v)

    @property
    def meta_name(self) -> str:
        return f"{MANAGED_PREFIX}{self.name}"
