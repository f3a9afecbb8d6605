"""Load and validate the tenant registry YAML, one tenant at a time.

A broken tenant entry never stops the others: it is left out of :attr:`LoadedRegistry.tenants` and described
in :attr:`LoadedRegistry.problems` (file, tenant, field, message). Only problems that belong to no tenant (not
UTF-8, not YAML, no ``tenants`` list, a bad top-level key) raise :class:`RegistryError`.

Besides each tenant's own model, the loader checks what only the whole list can show: a tenant id, a
``catalog_id`` or a dedicated ad account claimed by two entries. Both entries of such a pair are rejected,
because either one alone would sync (and delete) the other's products or spend.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kobi_cpas.registry.filters import FilterError, validate_rule
from kobi_cpas.registry.models import AD_ACCOUNT_RE, TENANT_ID_RE, Registry, Tenant
from kobi_cpas.registry.product_sets import DeclaredProductSet
from kobi_cpas.registry.yaml_loader import YamlIssue, format_path, read_yaml

DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "data" / "demo" / "tenants.yaml"

# Credentials in a feed URL (user:password@host, token-like query parameters) never reach a message.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_SECRET_PARAM = re.compile(r"(?i)((?:token|key|secret|password|passwd|sig|signature|auth)[a-z_]*=)[^&\s'\"]+")


class RegistryError(ValueError):
    """A registry (or tenant) that cannot be used; the message names the file, the tenant and the field."""


@dataclass(frozen=True)
class RegistryProblem:
    """Why one tenant entry of the registry was left out."""

    path: Path
    index: int  # 0-based position in the tenants list
    tenant_id: str | None  # the entry's id when it is a valid id (its partition is still known)
    field: str  # e.g. "sync.timezone" or "(tenant)"
    message: str
    label: str = ""  # how the entry is named in messages: 'id' or #position

    @property
    def tenant(self) -> str:
        return self.label or (f"'{self.tenant_id}'" if self.tenant_id else f"#{self.index + 1}")

    def describe(self) -> str:
        """The problem without the file (for lists that name the file once)."""
        return f"tenant {self.tenant}, field '{self.field}': {self.message}"

    def __str__(self) -> str:
        return f"registry {self.path}: {self.describe()}"


def registry_path() -> Path:
    return Path(os.environ.get("KOBI_CPAS_TENANTS") or DEFAULT_REGISTRY).expanduser().resolve()


@dataclass(frozen=True)
class LoadedRegistry:
    path: Path
    registry: Registry  # the valid tenants only
    content_hash: str
    problems: list[RegistryProblem] = field(default_factory=list)

    @property
    def tenants(self) -> list[Tenant]:
        return self.registry.tenants

    @property
    def broken_tenant_ids(self) -> list[str]:
        """Ids of broken entries that still name a valid id (their partitions must not be dropped)."""
        return sorted({p.tenant_id for p in self.problems if p.tenant_id})

    @property
    def has_unnamed_problems(self) -> bool:
        """A broken entry whose id is unreadable: it may be any tenant, so nothing may be dropped."""
        return any(p.tenant_id is None for p in self.problems)

    def problems_of(self, tenant_id: str) -> list[RegistryProblem]:
        return [p for p in self.problems if p.tenant_id == tenant_id]

    def problems_text(self) -> str:
        """One line per problem, the file named once ('' when there is none)."""
        if not self.problems:
            return ""
        return f"registry {self.path}: {len(self.problems)} problem(s)\n  - " + "\n  - ".join(
            p.describe() for p in self.problems
        )

    def tenant(self, tenant_id: str) -> Tenant:
        """The valid tenant; RegistryError (with its problems) when broken, KeyError when absent."""
        broken = self.problems_of(tenant_id)
        if broken:
            raise RegistryError(
                f"registry {self.path}: tenant '{tenant_id}' is invalid and left out until fixed:\n  - "
                + "\n  - ".join(p.describe() for p in broken)
            )
        return self.registry.tenant(tenant_id)

    def feed_location(self, tenant: Tenant) -> str:
        """The feed source as an absolute path or URL (relative paths are relative to the registry file)."""
        if tenant.feed.is_url:
            return tenant.feed.source
        p = Path(tenant.feed.source).expanduser()
        return str(p if p.is_absolute() else (self.path.parent / p).resolve())


def scrub(text: str) -> str:
    """Text with URL credentials and token-like parameters removed (registry messages echo values)."""
    from kobi_cpas.meta.redact import redact  # pure module; lazy keeps the registry import light

    return redact(_SECRET_PARAM.sub(r"\1[REDACTED]", _URL_USERINFO.sub(r"\1[REDACTED]@", text)))


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        loc = [p for p in err.get("loc", ()) if p != "__root__"]
        field_path = format_path(loc) or "(tenant)"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        got = err.get("input")
        if err.get("type") != "missing" and not isinstance(got, dict | list):
            msg += f" (got {got!r})"
        out.append((field_path, scrub(msg)))
    return out


def _product_set_problems(t: Tenant) -> list[tuple[str, str]]:
    problems = []
    targets = {"catalog", *(r.retailer for r in t.cpas_retailers)}
    for i, raw in enumerate(t.product_sets):
        try:
            decl = DeclaredProductSet.model_validate(raw)
        except ValidationError as exc:
            problems.extend((f"product_sets[{i}].{f}", m) for f, m in _pydantic_problems(exc))
            continue
        except ValueError as exc:
            problems.append((f"product_sets[{i}]", str(exc)))
            continue
        if decl.target not in targets:
            problems.append(
                (
                    f"product_sets[{i}].target",
                    f"'{decl.target}' is neither 'catalog' nor one of the tenant's retailers "
                    f"({', '.join(sorted(targets - {'catalog'}))})",
                )
            )
    return problems


def _segment_filter_problems(t: Tenant) -> list[tuple[str, str]]:
    problems = []
    for j, r in enumerate(t.cpas_retailers):
        if r.segment_filter is None:
            continue
        try:
            validate_rule(r.segment_filter)
        except FilterError as exc:
            where = "" if exc.path == "<rule>" else f".{exc.path}"
            problems.append((f"cpas_retailers[{j}].segment_filter{where}", exc.problem))
    return problems


def _validate_tenant(entry: Any) -> tuple[Tenant | None, list[tuple[str, str]]]:
    if not isinstance(entry, dict):
        return None, [("(tenant)", f"expected a mapping of tenant settings, got {type(entry).__name__}")]
    try:
        tenant = Tenant.model_validate(entry)
    except ValidationError as exc:
        return None, _pydantic_problems(exc)
    problems = _segment_filter_problems(tenant) + _product_set_problems(tenant)
    return (None if problems else tenant), problems


def _known_id(entry: Any) -> str | None:
    """The entry's tenant id when it is a valid id, whatever else is wrong with the entry."""
    raw = entry.get("tenant_id") if isinstance(entry, dict) else None
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    s = str(raw).strip().lower()
    return s if TENANT_ID_RE.match(s) else None


def _label(entry: Any, index: int) -> str:
    raw = entry.get("tenant_id") if isinstance(entry, dict) else None
    if isinstance(raw, str | int) and not isinstance(raw, bool) and str(raw).strip():
        return scrub(repr(str(raw).strip()[:64]))
    return f"#{index + 1}"


def _text_id(v: Any) -> str | None:
    return str(v).strip() if isinstance(v, str | int) and not isinstance(v, bool) and str(v).strip() else None


def _shared_claims(entries: list[Any], labels: list[str]) -> dict[int, list[tuple[str, str]]]:
    """Tenant ids, catalogs and dedicated ad accounts claimed by two entries: both entries get a problem."""
    claims: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        if tid := _known_id(entry):
            claims[("tenant_id", tid)].append((i, "tenant_id"))
        if catalog := _text_id(entry.get("catalog_id")):
            claims[("catalog", catalog)].append((i, "catalog_id"))
        retailers = entry.get("cpas_retailers")
        accounts_here: set[str] = set()  # one tenant's retailers sharing an account is the model's check
        for j, r in enumerate(retailers if isinstance(retailers, list) else []):
            act = _text_id(r.get("dedicated_ad_account_id")) if isinstance(r, dict) else None
            if act is None:
                continue
            act = f"act_{act}" if act.isdigit() else act
            if AD_ACCOUNT_RE.match(act) and act not in accounts_here:
                accounts_here.add(act)
                claims[("ad_account", act)].append((i, f"cpas_retailers[{j}].dedicated_ad_account_id"))
    why = {
        "tenant_id": "tenant_id '{v}' appears twice",
        "catalog": "catalog {v} is also the catalog_id of",
        "ad_account": "ad account {v} is also the dedicated ad account of",
    }
    risk = {
        "tenant_id": "every tenant needs its own id",
        "catalog": "two tenants syncing one catalog would delete each other's products; "
        "give each tenant its own catalog",
        "ad_account": "a dedicated ad account serves one tenant only (Collaborative Ads spend and "
        "attribution are per brand)",
    }
    out: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for (kind, value), users in claims.items():
        if len({i for i, _ in users}) < 2:
            continue
        for i, field_path in users:
            others = ", ".join(f"tenant {labels[k]} (entry #{k + 1})" for k, _ in users if k != i)
            head = why[kind].format(v=value)
            out[i].append((field_path, f"{head} {others}: {risk[kind]}"))
    return out


def _whole_file(source: Path, problem: str) -> RegistryError:
    return RegistryError(f"registry {source}: {problem}")


def parse_registry(text: str, source: Path) -> tuple[Registry, list[RegistryProblem]]:
    """The valid tenants and one problem per broken one; RegistryError for problems of the whole file."""
    try:
        raw, issues = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _whole_file(source, f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tenants"), list):
        raise _whole_file(source, "expected a mapping with a 'tenants' list at the top")
    per_entry: dict[int, list[tuple[str, str]]] = defaultdict(list)
    file_issues: list[YamlIssue] = []
    for issue in issues:
        if len(issue.path) >= 2 and issue.path[0] == "tenants" and isinstance(issue.path[1], int):
            inner = issue.path[2:]
            # A cut-off structure's path can be hundreds of levels long: name where it starts.
            field_path = (
                format_path(inner[:6]) + "..." if len(inner) > 8 else format_path(inner)
            ) or "(tenant)"
            per_entry[issue.path[1]].append((field_path, f"line {issue.line}: {issue.message}"))
        else:
            file_issues.append(issue)
    if file_issues:
        raise _whole_file(
            source,
            "\n  - ".join(
                [f"{len(file_issues)} problem(s)"]
                + [f"line {i.line}, '{format_path(i.path) or '(root)'}': {i.message}" for i in file_issues]
            ),
        )
    try:
        top = Registry.model_validate({**raw, "tenants": []})
    except ValidationError as exc:
        lines = [f"field '{f}': {m}" for f, m in _pydantic_problems(exc)]
        raise _whole_file(source, f"{len(lines)} problem(s)\n  - " + "\n  - ".join(lines)) from None

    entries: list[Any] = raw["tenants"]
    labels = [_label(e, i) for i, e in enumerate(entries)]
    valid: dict[int, Tenant] = {}
    for i, entry in enumerate(entries):
        tenant, problems = _validate_tenant(entry)
        per_entry[i].extend(problems)
        if tenant is not None:
            valid[i] = tenant
    for i, problems in _shared_claims(entries, labels).items():
        per_entry[i].extend(problems)

    found: list[RegistryProblem] = []
    for i in sorted(k for k, v in per_entry.items() if v):
        valid.pop(i, None)
        tid = _known_id(entries[i])
        found.extend(RegistryProblem(source, i, tid, f, m, labels[i]) for f, m in per_entry[i])
    registry = Registry(version=top.version, tenants=[valid[i] for i in sorted(valid)])
    return registry, found


# The last registry parsed from each path, by content hash: every run (and every sensor tick) loads the
# registry, and parsing and validating it costs far more than reading and hashing the file. The key is the
# content itself, not the file's size and mtime (which can stay the same across a quick rewrite).
_PARSED: dict[Path, LoadedRegistry] = {}
_PARSED_LOCK = threading.Lock()


def load_registry(path: Path | str | None = None) -> LoadedRegistry:
    """The registry at ``path`` (default: KOBI_CPAS_TENANTS); broken tenants are in ``.problems``.

    The file is read every time; it is parsed again only when its content changed. Each caller gets its own
    deep copy, so changing a returned registry never changes what the next caller gets."""
    p = Path(path).expanduser().resolve() if path else registry_path()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise RegistryError(
            f"registry {p}: file not found (set KOBI_CPAS_TENANTS to the registry YAML)"
        ) from None
    except OSError as exc:
        raise RegistryError(f"registry {p}: cannot be read ({exc.strerror or exc})") from None
    content_hash = hashlib.sha256(data).hexdigest()
    with _PARSED_LOCK:
        cached = _PARSED.get(p)
    if cached is None or cached.content_hash != content_hash:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RegistryError(f"registry {p}: not UTF-8 (byte {exc.start})") from None
        registry, problems = parse_registry(text, p)
        cached = LoadedRegistry(path=p, registry=registry, content_hash=content_hash, problems=problems)
        with _PARSED_LOCK:
            _PARSED[p] = cached
    return copy.deepcopy(cached)
