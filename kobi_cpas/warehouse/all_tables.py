"""Imports every module that declares analyst tables, so the registry in ``tables`` is complete."""

from kobi_cpas.cpas import tables as _cpas_tables  # noqa: F401
from kobi_cpas.diagnostics import tables as _diagnostics_tables  # noqa: F401
from kobi_cpas.insights import tables as _insights_tables  # noqa: F401
from kobi_cpas.sync import guards as _sync_guards  # noqa: F401  (sync_state.surplus_deletions)
from kobi_cpas.sync import state as _sync_state  # noqa: F401
from kobi_cpas.sync import tables as _sync_tables  # noqa: F401
from kobi_cpas.warehouse import tables  # noqa: F401
