"""Load and validate the tenant registry YAML, turning pydantic errors into one clear line per problem."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kobi_cpas.registry.models import Registry, Tenant

DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "data" / "demo" / "tenants.yaml"


class RegistryError(ValueError):
    """A registry that cannot be used; the message names the file, the tenant and the field."""


def registry_path() -> Path:
    return Path(os.environ.get("KOBI_CPAS_TENANTS") or DEFAULT_REGISTRY).expanduser().resolve()


@dataclass(frozen=True)
class LoadedRegistry:
    path: Path
    registry: Registry
    content_hash: str

    @property
    def tenants(self) -> list[Tenant]:
        return self.registry.tenants

    def tenant(self, tenant_id: str) -> Tenant:
        return self.registry.tenant(tenant_id)

    def feed_location(self, tenant: Tenant) -> str:
        """The feed source as an absolute path or URL (relative paths are relative to the registry file)."""
        if tenant.feed.is_url:
            return tenant.feed.source
        p = Path(tenant.feed.source).expanduser()
        return str(p if p.is_absolute() else (self.path.parent / p).resolve())


def _describe(err: dict[str, Any], raw: Any) -> str:
    loc = list(err.get("loc", ()))
    tenant_label = "-"
    field_path = ".".join(str(p) for p in loc) or "(root)"
    if len(loc) >= 2 and loc[0] == "tenants" and isinstance(loc[1], int):
        idx = loc[1]
        tid = None
        if isinstance(raw, dict) and isinstance(raw.get("tenants"), list) and idx < len(raw["tenants"]):
            entry = raw["tenants"][idx]
            if isinstance(entry, dict):
                tid = entry.get("tenant_id")
        tenant_label = f"'{tid}'" if tid is not None else f"#{idx + 1}"
        rest = loc[2:]
        field_path = (
            "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest).lstrip(".") or "(tenant)"
        )
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    got = err.get("input")
    got_s = ""
    if err.get("type") != "missing" and not isinstance(got, dict | list):
        got_s = f" (got {got!r})"
    return f"tenant {tenant_label}, field '{field_path}': {msg}{got_s}"


def parse_registry(text: str, source: Path) -> Registry:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RegistryError(
            f"registry {source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(raw, dict):
        raise RegistryError(f"registry {source}: expected a mapping with a 'tenants' list at the top")
    try:
        return Registry.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, raw) for e in exc.errors()]
        head = f"registry {source}: {len(lines)} problem(s)"
        raise RegistryError(head + "\n  - " + "\n  - ".join(lines)) from None


def _validate_product_sets(reg: Registry, source: Path) -> None:
    from kobi_cpas.cpas.product_sets import DeclaredProductSet  # lazy: cpas imports the registry models

    problems = []
    for t in reg.tenants:
        targets = {"catalog", *(r.retailer for r in t.cpas_retailers)}
        for i, raw in enumerate(t.product_sets):
            try:
                decl = DeclaredProductSet.model_validate(raw)
            except (ValidationError, ValueError) as exc:
                errs = exc.errors() if isinstance(exc, ValidationError) else [{"loc": (), "msg": str(exc)}]
                for e in errs:
                    loc = "".join(f".{x}" for x in e.get("loc", ()))
                    problems.append(
                        f"tenant '{t.tenant_id}', field 'product_sets[{i}]{loc}': "
                        + str(e.get("msg", "invalid")).removeprefix("Value error, ")
                    )
                continue
            if decl.target not in targets:
                problems.append(
                    f"tenant '{t.tenant_id}', field 'product_sets[{i}].target': '{decl.target}' is neither "
                    f"'catalog' nor one of the tenant's retailers ({', '.join(sorted(targets - {'catalog'}))})"
                )
    if problems:
        raise RegistryError(f"registry {source}: {len(problems)} problem(s)\n  - " + "\n  - ".join(problems))


def load_registry(path: Path | str | None = None) -> LoadedRegistry:
    p = Path(path).expanduser().resolve() if path else registry_path()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise RegistryError(
            f"registry {p}: file not found (set KOBI_CPAS_TENANTS to the registry YAML)"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(f"registry {p}: not UTF-8 (byte {exc.start})") from None
    reg = parse_registry(text, p)
    _validate_product_sets(reg, p)
    return LoadedRegistry(path=p, registry=reg, content_hash=hashlib.sha256(data).hexdigest())
