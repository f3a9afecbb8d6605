"""Tenant registry: validation with one clear message naming file, tenant and field; a broken tenant is left
out (and described in ``problems``) while every other tenant stays usable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from kobi_cpas.registry import LoadedRegistry, RegistryError, load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "tenants.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return p


def _demo() -> dict:
    return yaml.safe_load(DEFAULT_REGISTRY.read_text())


def _problems(reg: LoadedRegistry) -> str:
    return "\n".join(str(p) for p in reg.problems)


DEMO_IDS = ["anatolia_home", "bosphorus_outdoor", "cappadocia_ceramics"]


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
    reg = load_registry(p)
    msg = _problems(reg)
    assert str(p) in msg
    assert "tenant 'bosphorus_outdoor'" in msg
    assert "cpas_retailers[0].partnership_status" in msg
    assert "'acepted'" in msg
    # only the broken tenant is left out; looking it up explains why
    assert reg.registry.tenant_ids == ["anatolia_home", "cappadocia_ceramics"]
    [problem] = reg.problems
    assert (problem.path, problem.tenant_id, problem.field) == (
        p,
        "bosphorus_outdoor",
        "cpas_retailers[0].partnership_status",
    )
    with pytest.raises(RegistryError, match="partnership_status") as ei:
        reg.tenant("bosphorus_outdoor")
    assert str(p) in str(ei.value)


def test_missing_field_and_unknown_field(tmp_path):
    data = _demo()
    del data["tenants"][0]["catalog_id"]
    data["tenants"][2]["catalogue"] = "x"
    p = _write(tmp_path, data)
    reg = load_registry(p)
    msg = reg.problems_text()
    assert "tenant 'anatolia_home', field 'catalog_id': Field required" in msg
    assert "tenant 'cappadocia_ceramics', field 'catalogue'" in msg
    assert "2 problem(s)" in msg
    assert reg.registry.tenant_ids == ["bosphorus_outdoor"]


@pytest.mark.parametrize(
    "bad_id",
    ["../../etc", "acme'; DROP TABLE x; --", "a b", "", "x" * 65, "tenant/1", "_leading"],
)
def test_unsafe_tenant_ids_are_rejected(tmp_path, bad_id):
    data = _demo()
    data["tenants"][0]["tenant_id"] = bad_id
    p = _write(tmp_path, data)
    reg = load_registry(p)
    assert "field 'tenant_id'" in _problems(reg)
    assert reg.registry.tenant_ids == DEMO_IDS[1:]
    # an unreadable id is named by its position, and is not a known (partition) id
    assert [(pr.tenant_id, pr.index) for pr in reg.problems] == [(None, 0)]


def test_tenant_id_is_normalised_and_uuid_allowed(tmp_path):
    data = _demo()
    data["tenants"][0]["tenant_id"] = "  ANATOLIA_Home "
    data["tenants"][1]["tenant_id"] = "6f1c2a4e-0b7d-4c1e-9d55-2d7f0c1b9a10"
    reg = load_registry(_write(tmp_path, data))
    assert reg.registry.tenant_ids[:2] == ["anatolia_home", "6f1c2a4e-0b7d-4c1e-9d55-2d7f0c1b9a10"]


def test_duplicate_tenants_and_shared_ad_account(tmp_path):
    data = _demo()
    data["tenants"][1]["tenant_id"] = "anatolia_home"
    reg = load_registry(_write(tmp_path, data))
    assert "appears twice" in _problems(reg)
    assert reg.registry.tenant_ids == ["cappadocia_ceramics"]  # neither of the two entries wins
    with pytest.raises(RegistryError, match="appears twice"):
        reg.tenant("anatolia_home")
    data = _demo()
    r = data["tenants"][0]["cpas_retailers"]
    r[1]["dedicated_ad_account_id"] = r[0]["dedicated_ad_account_id"]
    reg = load_registry(_write(tmp_path, data))
    assert "one retailer only" in _problems(reg)
    assert reg.registry.tenant_ids == DEMO_IDS[1:]


def test_accepted_partnership_needs_neither_a_segment_id_nor_an_account(tmp_path):
    data = _demo()
    # both may come from Kobi's recorded state (cpas_state) instead of the registry
    del data["tenants"][0]["cpas_retailers"][0]["catalog_segment_id"]
    del data["tenants"][0]["cpas_retailers"][0]["dedicated_ad_account_id"]
    reg = load_registry(_write(tmp_path, data))
    assert not reg.problems and reg.registry.tenant_ids == DEMO_IDS
    retailer = reg.registry.tenant(DEMO_IDS[0]).cpas_retailers[0]
    assert retailer.catalog_segment_id is None and retailer.dedicated_ad_account_id is None
    assert retailer.partnership_status.value == "accepted"


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


# -- one bad tenant never touches another -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("replace_cron", "0 25 * * *", "sync.replace_cron"),
        ("update_cron", "61 * * * *", "sync.update_cron"),
        ("batch_cron", "0 0 31 2 *", "sync.batch_cron"),  # five fields, valid ranges, never fires
        ("timezone", "Europe/Istambul", "sync.timezone"),
        ("timezone", "../../etc/passwd", "sync.timezone"),
    ],
)
def test_bad_cron_or_time_zone_leaves_only_that_tenant_out(tmp_path, field, value, shown):
    data = _demo()
    data["tenants"][1].setdefault("sync", {})[field] = value
    p = _write(tmp_path, data)
    reg = load_registry(p)
    assert reg.registry.tenant_ids == ["anatolia_home", "cappadocia_ceramics"]
    [problem] = reg.problems
    assert (problem.tenant_id, problem.field) == ("bosphorus_outdoor", shown)
    assert str(p) in str(problem) and repr(value) in str(problem)


def test_valid_crons_and_effective_replace_cron_are_kept(tmp_path):
    data = _demo()
    data["tenants"][0]["sync"].update(
        replace_cadence="hourly", replace_cron="30 4 * * *", update_cron="5 */2 * * 1-5", timezone="UTC"
    )
    reg = load_registry(_write(tmp_path, data))
    assert not reg.problems
    sync = reg.tenant("anatolia_home").sync
    assert sync.effective_replace_cron == "30 * * * *"
    assert reg.tenant("bosphorus_outdoor").sync.effective_replace_cron == "15 * * * *"


def test_duplicate_key_in_a_tenant_is_that_tenants_problem_with_its_line(tmp_path):
    text = DEFAULT_REGISTRY.read_text().replace(
        '    catalog_id: "2000000000000002"\n',
        '    catalog_id: "2000000000000002"\n    catalog_id: "2000000000000009"\n',
    )
    line = text.splitlines().index('    catalog_id: "2000000000000009"') + 1
    reg = load_registry(_write(tmp_path, text))
    assert reg.registry.tenant_ids == ["anatolia_home", "cappadocia_ceramics"]
    [problem] = reg.problems
    assert (problem.tenant_id, problem.field) == ("bosphorus_outdoor", "catalog_id")
    assert f"line {line}" in problem.message and "appears twice" in problem.message


def test_duplicate_key_outside_tenants_is_a_whole_file_error(tmp_path):
    text = DEFAULT_REGISTRY.read_text().replace("version: 1\n", "version: 1\nversion: 2\n")
    with pytest.raises(RegistryError, match=r"line \d+, 'version': key 'version' appears twice"):
        load_registry(_write(tmp_path, text))


def _one_tenant_yaml(**fields: str) -> str:
    lines = [
        "tenants:",
        "  - tenant_id: good",
        '    business_id: "1"',
        '    catalog_id: "2"',
        "    feed: {source: feeds/good.csv}",
        "  - feed: {source: feeds/x.csv}",
    ]
    lines += [f"    {k}: {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def test_yaml_11_scalars_keep_their_text(tmp_path):
    text = _one_tenant_yaml(tenant_id="0012", business_id="0034", catalog_id="0056", name="yes") + (
        "    sync: {retention_days: 30, max_delete_share: 0.1, shards: 2}\n"
        "    cpas_retailers:\n"
        "      - retailer: on\n"
        "        catalog_segment_id: 0078\n"
        "        marketplace_seller_id: 1_000\n"
    )
    reg = load_registry(_write(tmp_path, text))
    assert not reg.problems, reg.problems_text()
    t = reg.tenant("0012")
    assert (t.tenant_id, t.business_id, t.catalog_id, t.name) == ("0012", "0034", "0056", "yes")
    assert (t.sync.retention_days, t.sync.max_delete_share, t.sync.shards) == (30, 0.1, 2)
    r = t.cpas_retailers[0]
    assert (r.retailer, r.catalog_segment_id, r.marketplace_seller_id) == ("on", "0078", "1_000")
    assert load_registry(_write(tmp_path, _one_tenant_yaml(tenant_id="yes", business_id="3", catalog_id="4")))
    assert reg.registry.tenant_ids == ["good", "0012"]


@pytest.mark.parametrize("field", ["tenant_id", "business_id", "catalog_id"])
def test_boolean_where_an_id_is_expected_says_quote_it(tmp_path, field):
    fields = {"tenant_id": "acme", "business_id": "3", "catalog_id": "4", field: "true"}
    reg = load_registry(_write(tmp_path, _one_tenant_yaml(**fields)))
    assert reg.registry.tenant_ids == ["good"]
    [problem] = reg.problems
    assert problem.field == field and "quote it" in problem.message


def test_boolean_retailer_and_ad_account_say_quote_it(tmp_path):
    text = _one_tenant_yaml(tenant_id="acme", business_id="3", catalog_id="4") + (
        "    cpas_retailers:\n      - retailer: false\n        dedicated_ad_account_id: true\n"
    )
    reg = load_registry(_write(tmp_path, text))
    fields = {p.field: p.message for p in reg.problems}
    assert set(fields) == {"cpas_retailers[0].retailer", "cpas_retailers[0].dedicated_ad_account_id"}
    assert all("quote it" in m for m in fields.values())


def test_demo_and_test_registries_read_the_same_as_before():
    from kobi_cpas.registry.yaml_loader import read_yaml

    texts = [DEFAULT_REGISTRY.read_text()]
    texts += [p.read_text() for p in Path(__file__).parent.rglob("*.yaml")]
    for text in texts:
        data, issues = read_yaml(text)
        assert (data, issues) == (yaml.safe_load(text), [])
    assert load_registry(DEFAULT_REGISTRY).registry.tenant_ids == DEMO_IDS


def test_unknown_operator_in_segment_filter_is_a_tenant_problem(tmp_path):
    data = _demo()
    data["tenants"][2]["cpas_retailers"][0]["segment_filter"] = {"and": [{"brand": {"is_anyy": ["x"]}}]}
    reg = load_registry(_write(tmp_path, data))
    assert reg.registry.tenant_ids == DEMO_IDS[:2]
    [problem] = reg.problems
    assert problem.tenant_id == "cappadocia_ceramics"
    assert problem.field == "cpas_retailers[0].segment_filter.and[0].brand"
    assert "unknown operator 'is_anyy'" in problem.message


def nested_rule_json(levels: int) -> str:
    """A rule of ``levels`` nested and-groups as JSON text (built as text: json.dumps recurses too)."""
    return '{"and": [' * levels + '{"brand": {"eq": "x"}}' + "]}" * levels


@pytest.mark.parametrize("levels", [40, 250, 1500])
def test_deeply_nested_filter_is_a_named_problem_not_a_recursion_error(tmp_path, levels):
    data = _demo()
    data["tenants"][0]["cpas_retailers"][1]["segment_filter"] = "DEEP"
    for t in data["tenants"]:
        t["feed"]["source"] = str(DEFAULT_REGISTRY.parent / t["feed"]["source"])
    p = tmp_path / "tenants.yaml"
    p.write_text(json.dumps(data).replace('"DEEP"', nested_rule_json(levels)))  # JSON is YAML
    reg = load_registry(p)
    assert reg.registry.tenant_ids == DEMO_IDS[1:]
    assert {pr.tenant_id for pr in reg.problems} == {"anatolia_home"}
    assert all(pr.field.startswith("cpas_retailers[1].segment_filter") for pr in reg.problems)
    assert "levels deep" in _problems(reg) or "groups deep" in _problems(reg)
    assert all(len(str(pr)) < 400 for pr in reg.problems)


def test_two_tenants_sharing_a_catalog_are_both_rejected(tmp_path):
    data = _demo()
    data["tenants"][2]["catalog_id"] = data["tenants"][0]["catalog_id"]
    p = _write(tmp_path, data)
    reg = load_registry(p)
    assert reg.registry.tenant_ids == ["bosphorus_outdoor"]
    by_tenant = {pr.tenant_id: pr for pr in reg.problems}
    assert set(by_tenant) == {"anatolia_home", "cappadocia_ceramics"}
    assert {pr.field for pr in reg.problems} == {"catalog_id"}
    assert "'cappadocia_ceramics'" in by_tenant["anatolia_home"].message
    assert "'anatolia_home'" in by_tenant["cappadocia_ceramics"].message
    assert "delete each other's products" in str(by_tenant["anatolia_home"])


def test_one_dedicated_ad_account_for_two_tenants_rejects_both(tmp_path):
    data = _demo()
    shared = data["tenants"][0]["cpas_retailers"][1]["dedicated_ad_account_id"]
    # written without the act_ prefix: still the same account
    data["tenants"][2]["cpas_retailers"][0]["dedicated_ad_account_id"] = shared.removeprefix("act_")
    reg = load_registry(_write(tmp_path, data))
    assert reg.registry.tenant_ids == ["bosphorus_outdoor"]
    fields = {(pr.tenant_id, pr.field) for pr in reg.problems}
    assert fields == {
        ("anatolia_home", "cpas_retailers[1].dedicated_ad_account_id"),
        ("cappadocia_ceramics", "cpas_retailers[0].dedicated_ad_account_id"),
    }
    assert all(shared in pr.message for pr in reg.problems)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\xff\xfetenants: []", "not UTF-8"),
        (b"- just\n- a list\n", "'tenants' list"),
        (b"tenants: {a: 1}\n", "'tenants' list"),
        (b"tenants: []\nextra: 1\n", "field 'extra'"),
    ],
)
def test_whole_file_problems_still_raise(tmp_path, content, match):
    p = tmp_path / "tenants.yaml"
    p.write_bytes(content)
    with pytest.raises(RegistryError, match=match) as ei:
        load_registry(p)
    assert str(p) in str(ei.value)


def test_credentials_in_a_feed_url_never_reach_a_problem(tmp_path):
    data = _demo()
    data["tenants"][0]["feed"] = {
        "source": "https://brand:s3cr3tpass@feeds.example.com/x.csv",
        "format": "csv",
    }
    data["tenants"][0]["feed"]["unknown"] = "https://u:hunter2secret@h/x?token=abcdef123456"
    reg = load_registry(_write(tmp_path, data))
    text = _problems(reg)
    assert "feed.unknown" in text
    assert "hunter2secret" not in text and "abcdef123456" not in text


def test_a_changed_registry_is_parsed_again_even_with_the_same_size_and_mtime(tmp_path, monkeypatch):
    import kobi_cpas.registry.loader as loader

    parsed = []
    real_parse = loader.parse_registry
    monkeypatch.setattr(
        loader, "parse_registry", lambda text, source: parsed.append(source) or real_parse(text, source)
    )
    data = _demo()
    p = _write(tmp_path, data)
    first = load_registry(p)
    assert load_registry(p).registry.tenant_ids == DEMO_IDS
    assert len(parsed) == 1  # unchanged: parsed once
    # Rewritten in place with the same size and the same mtime: still re-read.
    st = p.stat()
    data["tenants"][0]["name"] = data["tenants"][0]["name"][:-1] + "X"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    )
    again = load_registry(p)
    assert len(parsed) == 2
    assert again.tenant(DEMO_IDS[0]).name.endswith("X") and again.content_hash != first.content_hash
    # A file that breaks is reported, not served from the cache.
    p.write_text("tenants: {a: 1}\n", encoding="utf-8")
    with pytest.raises(RegistryError, match="'tenants' list"):
        load_registry(p)


def test_a_returned_registry_can_be_changed_without_changing_the_next_one(tmp_path):
    p = _write(tmp_path, _demo())
    reg = load_registry(p)
    reg.registry.tenants.pop()  # tenants are frozen models, but the lists holding them are not
    reg.tenant(DEMO_IDS[0]).cpas_retailers.clear()
    reg.problems.append(reg.problems[0] if reg.problems else "x")
    again = load_registry(p)
    assert again.registry.tenant_ids == DEMO_IDS
    assert again.tenant(DEMO_IDS[0]).cpas_retailers
    assert again.problems == []


def test_an_onboarding_step_cannot_be_more_automated_than_meta_allows():
    from pydantic import ValidationError

    from kobi_cpas.registry.models import CpasRetailer

    ok = CpasRetailer(
        retailer="trendyol", onboarding_steps={"segment_shared": "hybrid", "campaign": "manual"}
    )
    assert ok.onboarding_steps == {"segment_shared": "hybrid", "campaign": "manual"}
    with pytest.raises(ValidationError, match="brand_accepts' cannot be api: Meta allows manual"):
        CpasRetailer(retailer="trendyol", onboarding_steps={"brand_accepts": "api"})
    with pytest.raises(ValidationError, match="unknown onboarding step 'accept'"):
        CpasRetailer(retailer="trendyol", onboarding_steps={"accept": "manual"})
