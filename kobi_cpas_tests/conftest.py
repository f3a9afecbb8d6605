"""Shared fixtures: one real PostgreSQL and one Meta sandbox server per test session, and the code location
running against them."""

import gc
import os

# The tests pull fixed dates (e.g. 2026-11-10): the date partitions must reach back to them whatever day the suite
# runs, so they start at a fixed date here instead of three months back (set before the code location loads).
os.environ.setdefault("KOBI_CPAS_INSIGHTS_START_DATE", "2025-01-01")

# Dagster allocates many small objects per run and event: with the default thresholds the cyclic collector runs
# thousands of times per module, ~13 % of the suite's CPU (measured A/B on the catalog sync module). The objects
# of the imports are frozen out of the collector and the collections made rarer; nothing here relies on a
# collection's timing.
gc.collect()
gc.freeze()
gc.set_threshold(50_000, 20, 100)

pytest_plugins = [
    "kobi_cpas_tests.pg_fixtures",
    "kobi_cpas_tests.sandbox_fixtures",
    "kobi_cpas_tests.dagster_fixtures",
]

# The modules that run the most Dagster jobs are handed to the xdist workers first, longest first, so that the
# workers finish together instead of one of them running a long module alone at the end. Other modules follow
# in their usual order; tests inside a module keep theirs.
_LONGEST_FIRST = (
    "test_safety_sync",
    "test_safety_feeds",
    "test_cpas_insights_e2e",
    "test_catalog_sync_e2e",
    "test_dry_run",
    "test_demo_day",
    "test_warehouse_publish_once",
    "test_warehouse",
    "test_safety_stack",
    "test_sensors_and_diagnostics_e2e",
    "test_fleet_isolation",
    "test_fleet_batch",
    "test_cpas_onboarding_state",
    "test_onboarding_existing_catalog",
)


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))
