"""Pytest fixtures for the Meta sandbox and a client pointed at it.

Import them into conftest.py (``from kobi_cpas_tests.sandbox_fixtures import *``) or list the module in
``pytest_plugins``. One sandbox server runs per session on a free loopback port; ``sandbox`` resets its world,
faults, request log and config before each test.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.registry import load_registry
from kobi_cpas.registry.loader import DEFAULT_REGISTRY
from meta_sandbox import SandboxAdmin, SandboxServer, World
from meta_sandbox.admin import CpasAdmin

__all__ = [
    "SANDBOX_API_VERSION",
    "SANDBOX_SEED",
    "SANDBOX_TOKEN",
    "SandboxHandle",
    "make_meta_client",
    "meta_client",
    "recorded_sleeps",
    "sandbox",
    "sandbox_server",
    "sandbox_token",
    "sandbox_world",
]

# Recognisable, so tests can assert it never leaks into logs, errors or the sandbox's request log.
SANDBOX_TOKEN = "EAAkobiTESTtoken9f3Kq7Zx2LmW8pR4vB6nY1cD"
SANDBOX_API_VERSION = "v26.0"
SANDBOX_SEED = 42


@dataclass
class SandboxHandle:
    url: str
    admin: SandboxAdmin
    server: SandboxServer
    world: World

    @property
    def graph_url(self) -> str:
        return f"{self.url}/{SANDBOX_API_VERSION}"


@pytest.fixture(scope="session")
def sandbox_world() -> World:
    """The demo registry's world (seed 42): the ids in kobi_cpas/data/demo/tenants.yaml exist."""
    return World.from_registry(load_registry(DEFAULT_REGISTRY), seed=SANDBOX_SEED)


@pytest.fixture(scope="session")
def sandbox_server(sandbox_world: World) -> Iterator[SandboxServer]:
    server = SandboxServer(sandbox_world, host="127.0.0.1", port=0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[SandboxHandle]:
    """A freshly reset sandbox: world rebuilt, no faults, empty request log, default config."""
    admin = SandboxAdmin(sandbox_server.url)
    admin.reset()
    try:
        yield SandboxHandle(
            url=sandbox_server.url, admin=admin, server=sandbox_server, world=sandbox_server.world
        )
    finally:
        admin.close()


@pytest.fixture
def cpas_admin(sandbox: SandboxHandle) -> Iterator[CpasAdmin]:
    """The sandbox's Collaborative Ads admin knobs (retailer side: shares, compliance, partners)."""
    yield sandbox.admin.cpas


@pytest.fixture
def sandbox_token() -> str:
    return SANDBOX_TOKEN


@pytest.fixture
def recorded_sleeps() -> list[float]:
    """Every wait the client asked for (the fake sleep records instead of sleeping)."""
    return []


@pytest.fixture
def make_meta_client(
    sandbox: SandboxHandle, recorded_sleeps: list[float]
) -> Iterator[Callable[..., MetaGraphClient]]:
    """Factory: ``make_meta_client(timeout=0.5, max_retries=2, app_secret=...)`` -> a client on the sandbox
    with the recognisable token, a recording fake sleep and seeded jitter."""
    clients: list[MetaGraphClient] = []

    def factory(**overrides: Any) -> MetaGraphClient:
        kwargs: dict[str, Any] = {
            "base_url": sandbox.url,
            "api_version": SANDBOX_API_VERSION,
            "access_token": SANDBOX_TOKEN,
            "timeout": 5.0,
            "sleep": recorded_sleeps.append,
            "rng": random.Random(0),
        }
        kwargs.update(overrides)
        client = MetaGraphClient(**kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def meta_client(make_meta_client: Callable[..., MetaGraphClient]) -> MetaGraphClient:
    return make_meta_client()
