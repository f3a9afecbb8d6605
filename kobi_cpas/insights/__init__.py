"""Pure (no Dagster) CPAS shared-item metrics: metric catalog, request plans, async report jobs, raw storage and
SQL parsing into DuckDB, slice replacement, reconciliation checks and a benchmark."""
