"""Routing of the sandbox: ``Route``, the ``Router`` route modules register on, and ``default_router``.

Route modules register handlers per (node kind, edge, method)::

    def register(router: Router) -> None:
        @router.edge("catalog", "product_feeds", name="catalog.product_feeds", methods=("GET",))
        def list_feeds(ctx: RequestContext) -> dict:
            catalog = ctx.node
            return ctx.paginate([...])

Fixed paths (``/<version>/catalog_all_errors``) use ``router.path``; admin routes (``/__sandbox/...``) use
``router.admin``. ``default_router()`` registers every module ``_route_modules`` lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from werkzeug.routing import BaseConverter, Map, Rule

FAMILY_CATALOG = "catalog_management"
FAMILY_ADS = "ads_management"
FAMILY_INSIGHTS = "ads_insights"

DEFAULT_PAGE_LIMIT = 25
MAX_PAGE_LIMIT = 5000
Handler = Callable[..., Any]


@dataclass(frozen=True)
class Route:
    name: str
    handler: Handler
    methods: frozenset[str]
    family: str = FAMILY_CATALOG
    kind: str | None = None
    edge: str | None = None
    rule: str | None = None


class _VersionConverter(BaseConverter):
    regex = r"v\d+\.\d+"


class Router:
    """Collects routes; the app builds its werkzeug ``Map``s from it."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, str], Route] = {}
        self.edges: dict[tuple[str, str, str], Route] = {}
        self.paths: list[Route] = []
        self.admin_routes: list[Route] = []
        self.by_name: dict[str, Route] = {}

    def _add(self, route: Route) -> None:
        if route.name in self.by_name:
            raise ValueError(f"sandbox route name {route.name!r} registered twice")
        self.by_name[route.name] = route

    def node(
        self, kind: str, *, name: str, methods: Iterable[str] = ("GET",), family: str = FAMILY_CATALOG
    ) -> Callable[[Handler], Handler]:
        """``/<version>/{id}`` for objects of ``kind`` (a key of state.NODE_KINDS)."""

        def deco(fn: Handler) -> Handler:
            route = Route(name, fn, frozenset(m.upper() for m in methods), family, kind=kind)
            self._add(route)
            for m in route.methods:
                self.nodes[(kind, m)] = route
            return fn

        return deco

    def edge(
        self,
        kind: str,
        edge: str,
        *,
        name: str,
        methods: Iterable[str] = ("GET",),
        family: str = FAMILY_CATALOG,
    ) -> Callable[[Handler], Handler]:
        """``/<version>/{id}/{edge}`` for objects of ``kind``."""

        def deco(fn: Handler) -> Handler:
            route = Route(name, fn, frozenset(m.upper() for m in methods), family, kind=kind, edge=edge)
            self._add(route)
            for m in route.methods:
                self.edges[(kind, edge, m)] = route
            return fn

        return deco

    def path(
        self, rule: str, *, name: str, methods: Iterable[str] = ("GET",), family: str = FAMILY_CATALOG
    ) -> Callable[[Handler], Handler]:
        """A fixed werkzeug rule under ``/<version>``, e.g. ``"/catalog_all_errors"``."""

        def deco(fn: Handler) -> Handler:
            route = Route(name, fn, frozenset(m.upper() for m in methods), family, rule=rule)
            self._add(route)
            self.paths.append(route)
            return fn

        return deco

    def admin(
        self, rule: str, *, name: str, methods: Iterable[str] = ("GET",)
    ) -> Callable[[Handler], Handler]:
        """A rule under ``/__sandbox``; the handler is ``fn(app, request, **url_args)`` and returns JSON data
        or ``(data, status)``. No token needed."""

        def deco(fn: Handler) -> Handler:
            route = Route(name, fn, frozenset(m.upper() for m in methods), "admin", rule=rule)
            self._add(route)
            self.admin_routes.append(route)
            return fn

        return deco

    def graph_map(self) -> Map:
        rules = [
            Rule("/<ver:version>/<node_id>", endpoint="__node__"),
            Rule("/<ver:version>/<node_id>/<edge>", endpoint="__edge__"),
        ]
        rules += [
            Rule(f"/<ver:version>{r.rule}", endpoint=r.name, methods=sorted(r.methods)) for r in self.paths
        ]
        return Map(rules, converters={"ver": _VersionConverter})

    def admin_map(self) -> Map:
        return Map(
            [
                Rule(f"/__sandbox{r.rule}", endpoint=r.name, methods=sorted(r.methods))
                for r in self.admin_routes
            ]
        )


def _route_modules() -> list[ModuleType]:
    from meta_sandbox import (
        routes_admin,
        routes_ads,
        routes_batch,
        routes_catalog,
        routes_cpas,  # collaborative ads; registered after routes_catalog because it wraps GET /{business}
        routes_diagnostics,
        routes_feeds,
        routes_insights,  # shared-item metrics
    )

    return [
        routes_admin,
        routes_catalog,
        routes_ads,
        routes_feeds,
        routes_batch,
        routes_diagnostics,
        routes_insights,
        routes_cpas,
    ]


def default_router(extra_modules: Iterable[ModuleType] = ()) -> Router:
    router = Router()
    for module in [*_route_modules(), *extra_modules]:
        module.register(router)
    return router
