"""Shared fixtures: one real PostgreSQL and one Meta sandbox server per test session, and the code location
running against them."""

pytest_plugins = [
    "kobi_cpas_tests.pg_fixtures",
    "kobi_cpas_tests.sandbox_fixtures",
    "kobi_cpas_tests.dagster_fixtures",
]
