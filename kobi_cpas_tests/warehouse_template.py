"""An empty work database migrated once per test process (each xdist worker), copied into place where a test
gets a new warehouse.

Migrating a new work database costs ~0.3 s of CPU (mostly COMMENT ON statements), and most tests start from
one. The template is made by the product's own migration (``Warehouse.connect`` with ``kobi_cpas.tables.SCHEMA``),
so it cannot drift from the schema: its stored fingerprint (schema and data-migration versions, both fixed for
the running process) is the one the next connection computes, and ``Warehouse.migrate`` skips.

Beside it lies the empty analyst file of the schema that a publish from scratch copies (see
``AnalystPublisher.ensure_template``), made by the product too; seeding copies both.

It is built on first use rather than by a fixture, so plain helpers (a module's ``wh`` factory, world setups) can
seed too. Tests of migration itself (test_warehouse.py, schema changes, a new file) do not seed: they start from
nothing.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas.warehouse.publish import AnalystPublisher

__all__ = ["seed_work_database", "work_database_template"]

# The schema as declared, copied at import (before any test runs): a test may change SCHEMA's dicts in place
# (monkeypatch.setitem), and a template built meanwhile must not keep that change.
_DECLARED = replace(
    SCHEMA,
    tables=dict(SCHEMA.tables),
    views=dict(SCHEMA.views),
    data_migrations=dict(SCHEMA.data_migrations),
)
_LOCK = threading.Lock()
_template: Path | None = None


def work_database_template() -> Path:
    """The migrated empty work database of this process (built on first use, removed at exit)."""
    global _template
    with _LOCK:
        if _template is None or not _template.exists():
            root = Path(tempfile.mkdtemp(prefix="kobi_work_template_"))
            atexit.register(shutil.rmtree, root, True)
            wh = Warehouse(root / "kobi_cpas.duckdb", schema=_DECLARED)
            with wh.connect() as con:  # migrates; the last connection's DETACH checkpoints the file
                AnalystPublisher(wh.analyst_path, wh.lock_timeout, wh.work_dir).ensure_template(
                    con, _DECLARED
                )
            if wh.work_path.with_name(wh.work_path.name + ".wal").exists():
                raise RuntimeError(f"the work database template {wh.work_path} was not checkpointed")
            _template = wh.work_path
        return _template


def seed_work_database(analyst_path: Path | str) -> Path:
    """Put a copy of the template (and its analyst template) where a ``Warehouse(analyst_path)`` keeps its work
    database, unless one is there already, and return ``analyst_path``."""
    analyst = Path(analyst_path)
    work_path = Warehouse(analyst).work_path
    if not work_path.exists() and not work_path.with_name(work_path.name + ".wal").exists():
        work_path.parent.mkdir(parents=True, exist_ok=True)
        template = work_database_template()
        for source in (template, *template.parent.glob("analyst-template-*.duckdb")):
            shutil.copyfile(
                source, work_path.parent / (work_path.name if source == template else source.name)
            )
    return analyst
