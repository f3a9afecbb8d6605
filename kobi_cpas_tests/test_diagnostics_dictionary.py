"""catalog_error_types from catalog_all_errors (the reference sample), its daily refresh per locale, and the
CTA fallbacks: a CTA is never empty, including for types missing from the dictionary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from kobi_cpas.diagnostics.dictionary import (
    GENERIC_CTA,
    INGESTION_CTA,
    cta_for,
    generic_cta,
    needs_refresh,
    refresh_error_types,
    store_error_types,
)
from kobi_cpas.meta import MetaGraphClient
from kobi_cpas.tables import SCHEMA
from kobi_cpas.warehouse import Warehouse
from kobi_cpas_tests.test_diagnostics_support import REFERENCE_ERROR, rows
from kobi_cpas_tests.warehouse_template import seed_work_database

if TYPE_CHECKING:
    from kobi_cpas_tests.sandbox_fixtures import SandboxHandle

pytest_plugins = ["kobi_cpas_tests.sandbox_fixtures"]

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def wh(tmp_path: Path) -> Warehouse:
    return Warehouse(seed_work_database(tmp_path / "k.duckdb"), schema=SCHEMA)


def test_catalog_all_errors_reference_row_and_daily_refresh(
    sandbox: SandboxHandle, meta_client: MetaGraphClient, wh: Warehouse
) -> None:
    with wh.connect() as con:
        assert needs_refresh(con, "en_US", NOW)
        n = refresh_error_types(meta_client, con, "en_US", NOW)
        assert refresh_error_types(meta_client, con, "tr_TR", NOW) == n
        (ref,) = rows(
            con,
            "SELECT error_type, error_priority, title, description, call_to_action, meta_call_to_action, "
            "cta_is_generic, fetched_at FROM main.catalog_error_types WHERE locale = 'en_US' "
            "AND error_type = 'IMAGE_RESOLUTION_LOW'",
        )
        tr_title = con.execute(
            "SELECT title FROM main.catalog_error_types WHERE locale = 'tr_TR' AND error_type = 'IMAGE_RESOLUTION_LOW'"
        ).fetchone()
        blank = con.execute(
            "SELECT count(*) FROM main.catalog_error_types WHERE coalesce(trim(call_to_action), '') = ''"
        ).fetchone()
        assert not needs_refresh(con, "en_US", NOW + timedelta(hours=23))
        assert needs_refresh(con, "en_US", NOW + timedelta(hours=24))
        # A re-fetch replaces the locale's rows (no duplicates).
        assert refresh_error_types(meta_client, con, "en_US", NOW + timedelta(days=1)) == n
        count = con.execute("SELECT count(*) FROM main.catalog_error_types WHERE locale = 'en_US'").fetchone()
    assert n >= 15 and count == (n,) and blank == (0,)
    assert {
        k: ref[k] for k in ("error_type", "error_priority", "title", "description", "call_to_action")
    } == (REFERENCE_ERROR)
    assert ref["meta_call_to_action"] == REFERENCE_ERROR["call_to_action"] and ref["cta_is_generic"] is False
    assert ref["fetched_at"] == NOW
    assert tr_title == ("Eksik veya geçersiz görseller",)


def test_cta_is_never_empty(wh: Warehouse) -> None:
    entries = [
        dict(REFERENCE_ERROR),
        {
            "error_type": "NO_CTA_HIGH",
            "error_priority": "HIGH",
            "title": "t",
            "description": "d",
            "call_to_action": "",
        },
        {"error_type": "NO_CTA_LOW", "error_priority": "LOW", "title": "t", "description": "d"},
        {"error_type": "ODD_PRIORITY", "error_priority": "urgent", "title": "t", "call_to_action": "  "},
    ]
    with wh.connect() as con:
        assert store_error_types(con, entries, "en_US", NOW) == 4
        got = {
            r["error_type"]: (r["error_priority"], r["call_to_action"], r["cta_is_generic"])
            for r in rows(con, "SELECT * FROM main.catalog_error_types")
        }
        assert got["NO_CTA_HIGH"] == ("HIGH", GENERIC_CTA["HIGH"], True)
        assert got["NO_CTA_LOW"] == ("LOW", GENERIC_CTA["LOW"], True)
        assert got["ODD_PRIORITY"] == ("MEDIUM", GENERIC_CTA["MEDIUM"], True)
        assert got["IMAGE_RESOLUTION_LOW"][1:] == (REFERENCE_ERROR["call_to_action"], False)

        # The same rules, answered for one type (the join the merge uses).
        assert cta_for(con, "IMAGE_RESOLUTION_LOW") == REFERENCE_ERROR["call_to_action"]
        assert (
            cta_for(con, "IMAGE_RESOLUTION_LOW", locale="tr_TR") == REFERENCE_ERROR["call_to_action"]
        )  # en_US
        assert cta_for(con, "NO_CTA_LOW") == GENERIC_CTA["LOW"]  # the dictionary's priority
        # A type Meta reports but does not document: the item's own CTA, else the generic one.
        assert cta_for(con, "NEW_UNDOCUMENTED_ERROR", "HIGH") == GENERIC_CTA["HIGH"]
        assert cta_for(con, "NEW_UNDOCUMENTED_ERROR") == GENERIC_CTA["MEDIUM"]
        assert cta_for(con, "NEW_UNDOCUMENTED_ERROR", "LOW", reported_cta="Do X.") == "Do X."
        assert (
            cta_for(con, "GROUP_MISMATCH", "HIGH", source="feed_upload") != INGESTION_CTA["HIGH"]
        )  # Kobi's text
        assert cta_for(con, "SOMETHING_NEW", "HIGH", source="batch_request") == INGESTION_CTA["HIGH"]
        # Kobi's feed validation keeps its own CTA, and still gets one when it has none.
        assert cta_for(
            con, "MISSING_REQUIRED", "HIGH", source="kobi_feed_validation", reported_cta="Add it."
        ) == ("Add it.")
        assert cta_for(con, "MISSING_REQUIRED", "LOW", source="kobi_feed_validation") == GENERIC_CTA["LOW"]
    assert generic_cta("high") == GENERIC_CTA["HIGH"] and generic_cta(None) == GENERIC_CTA["MEDIUM"]
    assert all(v.strip() for v in (*GENERIC_CTA.values(), *INGESTION_CTA.values()))
