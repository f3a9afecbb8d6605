"""The kobi_cpas code location: every domain under kobi_cpas/defs plus the shared resources."""

from __future__ import annotations

import dagster as dg

import kobi_cpas.defs


@dg.definitions
def defs() -> dg.Definitions:
    return dg.components.load_defs(kobi_cpas.defs)
