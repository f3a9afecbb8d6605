"""An ingest of a feed seen before re-validates only its changed rows and leaves exactly the relations a full
ingest of the same file leaves: the items (row numbers, normalised values, validity, hashes) and the issues,
across edits, insertions, deletions, duplicate ids and item groups that come and go, in CSV, TSV and XML."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from kobi_cpas.feeds import FeedFileError, ingest_feed, stage_table_names
from kobi_cpas.feeds import snapshot as snapshot_module
from kobi_cpas.feeds.bench import write_rss_xml
from kobi_cpas.feeds.generator import generate_feed
from kobi_cpas.feeds.snapshot import SnapshotResult

TENANT = "inc"
N = 2_000


def write(con: duckdb.DuckDBPyConnection, rel: str, path: Path, fmt: str) -> None:
    if fmt == "xml":
        write_rss_xml(con, rel, path)
    else:
        delim = "\t" if fmt == "tsv" else ","
        con.execute(f"COPY (SELECT * FROM {rel}) TO '{path}' (HEADER, DELIMITER '{delim}')")


class Feed:
    """A feed file edited in SQL between ingests (table ``f``, file order = ``pos``)."""

    def __init__(self, tmp_path: Path, fmt: str) -> None:
        self.fmt = fmt
        self.path = tmp_path / f"feed.{fmt}"
        src = generate_feed(tmp_path / "gen.csv", N, seed=3, error_share=0.05, variant_mismatch=True)
        self.con = duckdb.connect()
        self.con.execute(
            f"CREATE TABLE f AS SELECT row_number() OVER () * 10 AS pos, * FROM read_csv('{src}', all_varchar=true)"
        )

    def edit(self, *sql: str) -> None:
        for statement in sql:
            self.con.execute(statement)

    def save(self) -> Path:
        write(self.con, "(SELECT * EXCLUDE (pos) FROM f ORDER BY pos)", self.path, self.fmt)
        return self.path


def ingest(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, snapshot: str) -> SnapshotResult:
    return ingest_feed(con, tenant_id=TENANT, snapshot_id=snapshot, path=path, fmt=fmt, source_label="feed")


def relations(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple], list[tuple]]:
    items, issues = stage_table_names(TENANT)
    return (
        con.execute(f"SELECT * FROM {items} ORDER BY row_number").fetchall(),
        con.execute(f"SELECT * FROM {issues} ORDER BY ALL").fetchall(),
    )


def assert_same_as_full(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, snapshot: str
) -> SnapshotResult:
    """Ingest ``path`` into ``con`` and into a new database; the relations and counts must be equal."""
    got = ingest(con, path, fmt, snapshot)
    fresh = duckdb.connect()
    want = ingest(fresh, path, fmt, snapshot)
    assert want.incremental_rows is None
    assert relations(con) == relations(fresh)
    for attr in ("item_count", "valid_count", "invalid_count", "issue_counts", "columns_present"):
        assert getattr(got, attr) == getattr(want, attr), attr
    return got


@pytest.mark.parametrize("fmt", ["csv", "tsv", "xml"])
def test_an_edited_feed_is_ingested_from_its_changed_rows_into_the_relations_a_full_ingest_makes(
    tmp_path, fmt
):
    feed, con = Feed(tmp_path, fmt), duckdb.connect()
    first = ingest(con, feed.save(), fmt, "s1")
    assert first.incremental_rows is None and first.invalid_count > 0

    # Titles and prices edited, an invalid price fixed and a valid one broken.
    feed.edit(
        "UPDATE f SET title = title || ' v2' WHERE hash(id) % 50 = 0",
        "UPDATE f SET price = '12.50 TRY' WHERE price NOT LIKE '% ___' AND hash(id) % 2 = 0",
        "UPDATE f SET price = 'about ten' WHERE hash(id) % 97 = 1",
    )
    second = assert_same_as_full(con, feed.save(), fmt, "s2")
    (edited,) = feed.con.execute(
        "SELECT count(*) FROM f WHERE hash(id) % 50 = 0 OR hash(id) % 97 = 1 OR price = '12.50 TRY'"
    ).fetchone()
    assert 0 < second.incremental_rows <= edited
    # A delimited file whose items are one line each is compared by its lines; XML by its rows.
    by = "rows" if fmt == "xml" else "lines"
    assert second.incremental_by == by

    # Items added at the top (every row number moves) and removed further down.
    feed.edit(
        "INSERT INTO f SELECT pos - 100000 AS pos, * EXCLUDE (pos) REPLACE ('new-' || id AS id) FROM f "
        "WHERE hash(id) % 100 = 3",
        "DELETE FROM f WHERE hash(id) % 100 = 4",
    )
    third = assert_same_as_full(con, feed.save(), fmt, "s3")
    (added,) = feed.con.execute("SELECT count(*) FROM f WHERE id LIKE 'new-%'").fetchone()
    assert third.incremental_rows == added and third.incremental_by == by

    # A duplicate id appears (cross-row errors for items whose own row did not change) ...
    feed.edit(
        "UPDATE f SET id = (SELECT min(id) FROM f WHERE id NOT LIKE 'new-%'), title = 'copy' "
        "WHERE pos = (SELECT max(pos) FROM f)"
    )
    fourth = assert_same_as_full(con, feed.save(), fmt, "s4")
    assert fourth.incremental_rows == 1
    items, _ = stage_table_names(TENANT)
    (dup_invalid,) = con.execute(
        f"SELECT count(*) FROM {items} WHERE NOT is_valid AND title = 'copy'"
    ).fetchone()
    assert dup_invalid == 1

    # ... and goes again when the item it copied is renamed: the copy's own row did not change, yet it is valid.
    feed.edit(
        "UPDATE f SET id = id || '-renamed' WHERE id = (SELECT id FROM f WHERE title = 'copy') AND title <> 'copy'"
    )
    fifth = assert_same_as_full(con, feed.save(), fmt, "s5")
    assert fifth.incremental_rows == 1
    assert con.execute(f"SELECT is_valid FROM {items} WHERE title = 'copy'").fetchall() == [(True,)]

    # An item group's brands disagree, then agree again.
    feed.edit(
        "UPDATE f SET brand = 'Other' WHERE id = (SELECT min(id) FROM f WHERE item_group_id IS NOT NULL)"
    )
    assert_same_as_full(con, feed.save(), fmt, "s6")
    feed.edit("UPDATE f SET brand = 'Acme' WHERE brand = 'Other'")
    assert_same_as_full(con, feed.save(), fmt, "s7")

    # The same file again: nothing to validate, the same relations under the new snapshot id.
    again = assert_same_as_full(con, feed.path, fmt, "s8")
    assert again.incremental_rows == 0 and again.incremental_by == by


def _ingest_twice(tmp_path: Path, *edits: str) -> SnapshotResult:
    feed, con = Feed(tmp_path, "csv"), duckdb.connect()
    ingest(con, feed.save(), "csv", "s1")
    feed.edit(*edits)
    return assert_same_as_full(con, feed.save(), "csv", "s2")


def test_a_row_present_twice_is_ingested_in_full(tmp_path):
    # Two identical rows could not be told apart by their hash.
    result = _ingest_twice(tmp_path, "INSERT INTO f SELECT pos + 1, * EXCLUDE (pos) FROM f WHERE pos = 10")
    assert result.incremental_rows is None


def test_a_new_column_is_ingested_in_full(tmp_path):
    result = _ingest_twice(
        tmp_path, "ALTER TABLE f ADD COLUMN custom_label_1 VARCHAR", "UPDATE f SET custom_label_1 = 'x'"
    )
    assert result.incremental_rows is None and "custom_label_1" in result.columns_present


def test_a_feed_mostly_changed_is_ingested_in_full(tmp_path):
    result = _ingest_twice(tmp_path, "UPDATE f SET title = title || ' v2' WHERE hash(id) % 4 <> 0")
    assert result.incremental_rows is None


def test_rows_stored_under_other_rules_are_validated_again(tmp_path):
    feed, con = Feed(tmp_path, "csv"), duckdb.connect()
    ingest(con, feed.save(), "csv", "s1")
    # what an upgrade that changes a rule or a normalisation leaves behind: a fingerprint that differs
    con.execute("UPDATE feed_stage.ingest_fingerprints SET fingerprint = 'older rules'")
    feed.edit("UPDATE f SET title = 'edited' WHERE pos = 10")
    assert assert_same_as_full(con, feed.save(), "csv", "s2").incremental_rows is None
    feed.edit("UPDATE f SET title = 'edited again' WHERE pos = 10")
    assert assert_same_as_full(con, feed.save(), "csv", "s3").incremental_rows == 1


def test_a_failed_incremental_ingest_leaves_the_previous_relations(tmp_path, monkeypatch):
    feed, con = Feed(tmp_path, "csv"), duckdb.connect()
    ingest(con, feed.save(), "csv", "s1")
    before = relations(con)
    feed.edit("UPDATE f SET title = 'edited' WHERE pos <= 100")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(snapshot_module, "finish_validation", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(con, feed.save(), "csv", "s2")
    assert relations(con) == before  # rows, row numbers, issues and the view's snapshot id
    monkeypatch.undo()
    assert assert_same_as_full(con, feed.path, "csv", "s3").incremental_rows == 10

    # an unreadable file fails before anything changes
    feed.path.write_text(feed.path.read_text().replace("\n", '\n"', 1))
    before = relations(con)
    with pytest.raises(FeedFileError):
        ingest(con, feed.path, "csv", "s4")
    assert relations(con) == before


def test_stage_rows_dropped_since_are_ingested_in_full(tmp_path):
    # what the snapshot step does when a file moved under its ingest: the fingerprint stays, the rows go
    feed, con = Feed(tmp_path, "csv"), duckdb.connect()
    ingest(con, feed.save(), "csv", "s1")
    items, _ = stage_table_names(TENANT)
    con.execute(f"DROP VIEW {items}")
    con.execute(f"DROP TABLE {items.replace('.items_', '.item_rows_')}")
    assert assert_same_as_full(con, feed.path, "csv", "s2").incremental_rows is None
