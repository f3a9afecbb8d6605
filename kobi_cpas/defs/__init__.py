"""Dagster definitions, one sub-package per domain. Loaded by kobi_cpas.definitions with load_defs."""
