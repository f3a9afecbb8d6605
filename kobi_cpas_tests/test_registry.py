"""Tenant registry: validation with one clear message naming file, tenant and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kobi_cpas.registry import RegistryError, load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "tenants.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return p


def _demo() -> dict:
    return yaml.safe_load(DEFAULT_REGISTRY.read_text())


def test_demo_registry_loads_with_feed_paths_resolved():
    reg = load_registry(DEFAULT_REGISTRY)
    assert reg.registry.tenant_ids == ["anatolia_home", "bosphorus_outdoor", "cappadocia_ceramics"]
    t = reg.tenant("anatolia_home")
    assert Path(reg.feed_location(t)).is_absolute()
    assert reg.feed_location(t).endswith("feeds/anatolia_home.csv")
    statuses = {r.partnership_status.value for t in reg.tenants for r in t.cpas_retailers}
    assert statuses >= {"accepted", "pending"}


def test_env_var_selects_registry(tmp_path, monkeypatch):
    data = _demo()
    data["tenants"] = data["tenants"][:1]
    p = _write(tmp_path, data)
    monkeypatch.setenv("KOBI_CPAS_TENANTS", str(p))
    assert load_registry().registry.tenant_ids == ["anatolia_home"]


def test_bad_enum_names_file_tenant_and_field(tmp_path):
    data = _demo()
    data["tenants"][1]["cpas_retailers"][0]["partnership_status"] = "acepted"
    p = _write(tmp_path, data)
    with pytest.raises(RegistryError) as ei:
        load_registry(p)
    msg = str(ei.value)
    assert str(p) in msg
    assert "tenant 'bosphorus_outdoor'" in msg
    assert "cpas_retailers[0].partnership_status" in msg
    assert "'acepted'" in msg


def test_missing_field_and_unknown_field(tmp_path):
    data = _demo()
    del data["tenants"][0]["catalog_id"]
    data["tenants"][2]["catalogue"] = "x"
    p = _write(tmp_path, data)
    with pytest.raises(RegistryError) as ei:
        load_registry(p)
    msg = str(ei.value)
    assert "tenant 'anatolia_home', field 'catalog_id': Field required" in msg
    assert "tenant 'cappadocia_ceramics', field 'catalogue'" in msg
    assert "2 problem(s)" in msg


@pytest.mark.parametrize(
    "bad_id",
    ["../../etc", "acme'; DROP TABLE x; --", "a b", "", "x" * 65, "tenant/1", "_leading"],
)
def test_unsafe_tenant_ids_are_rejected(tmp_path, bad_id):
    data = _demo()
    data["tenants"][0]["tenant_id"] = bad_id
    p = _write(tmp_path, data)
    with pytest.raises(RegistryError) as ei:
        load_registry(p)
    assert "field 'tenant_id'" in str(ei.value)


def test_tenant_id_is_normalised_and_uuid_allowed(tmp_path):
    data = _demo()
    data["tenants"][0]["tenant_id"] = "  ANATOLIA_Home "
    data["tenants"][1]["tenant_id"] = "6f1c2a4e-0b7d-4c1e-9d55-2d7f0c1b9a10"
    reg = load_registry(_write(tmp_path, data))
    assert reg.registry.tenant_ids[:2] == ["anatolia_home", "6f1c2a4e-0b7d-4c1e-9d55-2d7f0c1b9a10"]


def test_duplicate_tenants_and_shared_ad_account(tmp_path):
    data = _demo()
    data["tenants"][1]["tenant_id"] = "anatolia_home"
    with pytest.raises(RegistryError, match="appears twice"):
        load_registry(_write(tmp_path, data))
    data = _demo()
    r = data["tenants"][0]["cpas_retailers"]
    r[1]["dedicated_ad_account_id"] = r[0]["dedicated_ad_account_id"]
    with pytest.raises(RegistryError, match="one retailer only"):
        load_registry(_write(tmp_path, data))


def test_accepted_partnership_needs_segment_and_account(tmp_path):
    data = _demo()
    del data["tenants"][0]["cpas_retailers"][0]["catalog_segment_id"]
    with pytest.raises(RegistryError, match="accepted partnership needs"):
        load_registry(_write(tmp_path, data))


def test_yaml_syntax_error_has_line(tmp_path):
    p = _write(tmp_path, "tenants:\n  - tenant_id: a\n    business_id: [1, 2\n")
    with pytest.raises(RegistryError, match=r"not valid YAML at line \d+"):
        load_registry(p)


def test_missing_file(tmp_path):
    with pytest.raises(RegistryError, match="file not found"):
        load_registry(tmp_path / "nope.yaml")


def test_numeric_ids_in_yaml_become_strings(tmp_path):
    data = _demo()
    data["tenants"][0]["business_id"] = 1000000000000001
    reg = load_registry(_write(tmp_path, data))
    assert reg.tenant("anatolia_home").business_id == "1000000000000001"
