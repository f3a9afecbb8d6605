"""Shrink guard of the feed snapshot: a feed cut short (at a row boundary, so it still parses) or one where
many items suddenly turn invalid must not quietly set most of the catalog out of stock.

The new snapshot is compared with the last good one (``main.feed_items``: the valid items of the latest 'ok'
snapshot), set-based. It trips when the valid item count falls by more than the tenant's
``feed.max_shrink_share`` (default 20 %), or when more than that share of the previously valid items turn
invalid; either way only when at least ``feed.min_shrink_items`` (default 5) items are concerned. A tripped snapshot is *held* by the caller (nothing rebuilt) until a snapshot of different content
shows the drop again (it is real) or a person overrides one run.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

OVERRIDE_SHRINK_TAG = "kobi/override_shrink_guard"


@dataclass(frozen=True)
class ShrinkVerdict:
    previous_snapshot_id: str | None
    previous_valid: int  # valid items of the last good snapshot
    new_valid: int  # valid items of the new snapshot
    left_feed: int  # previously valid items absent from the new file (removed from the feed)
    turned_invalid: int  # previously valid items present but invalid now
    threshold: float
    min_items: int = 0  # a drop of fewer items never trips (percentages of a handful of items are noise)
    invalid_codes: tuple[tuple[str, int], ...] = ()  # (rule code, items) behind the items that turned invalid

    @property
    def drop_share(self) -> float:
        if not self.previous_valid:
            return 0.0
        return max(0, self.previous_valid - self.new_valid) / self.previous_valid

    @property
    def invalid_share(self) -> float:
        return self.turned_invalid / self.previous_valid if self.previous_valid else 0.0

    @property
    def drop_tripped(self) -> bool:
        return self.drop_share > self.threshold and self.previous_valid - self.new_valid >= self.min_items

    @property
    def invalid_tripped(self) -> bool:
        return self.invalid_share > self.threshold and self.turned_invalid >= self.min_items

    @property
    def tripped(self) -> bool:
        return self.drop_tripped or self.invalid_tripped

    def describe(self) -> str:
        """What tripped (or the figures when nothing did), naming counts, shares and the threshold."""
        parts = []
        thr = f"the {self.threshold:.0%} threshold (feed.max_shrink_share)"
        if self.drop_tripped or not self.tripped:
            parts.append(
                f"valid items went from {self.previous_valid:,} (last good snapshot {self.previous_snapshot_id}) "
                f"to {self.new_valid:,}: a drop of {self.drop_share:.1%}"
                + (f", over {thr}" if self.drop_tripped else f", within {thr}")
                + f"; {self.left_feed:,} of them left the feed"
            )
        if self.invalid_tripped:
            codes = ", ".join(f"{c} ({n:,})" for c, n in self.invalid_codes) or "unknown rules"
            parts.append(
                f"{self.turned_invalid:,} of {self.previous_valid:,} previously valid items "
                f"({self.invalid_share:.1%}) turned invalid, over {thr}; rules responsible: {codes}"
            )
        return "; ".join(parts)

    def metadata(self) -> dict[str, float | int]:
        return {
            "previous_valid": self.previous_valid,
            "new_valid": self.new_valid,
            "drop_share": round(self.drop_share, 4),
            "left_feed": self.left_feed,
            "turned_invalid": self.turned_invalid,
            "invalid_share": round(self.invalid_share, 4),
            "threshold": self.threshold,
        }


def evaluate_shrink(
    con: duckdb.DuckDBPyConnection,
    *,
    tenant_id: str,
    items_table: str,
    issues_table: str,
    new_valid: int,
    threshold: float,
    min_items: int = 0,
) -> ShrinkVerdict:
    """Compare the staged snapshot (``items_table`` / ``issues_table``) with the tenant's ``main.feed_items``."""
    prev_valid, left, turned, prev_snap = con.execute(  # type: ignore[misc]
        f"""WITH prev AS (SELECT retailer_id AS id, snapshot_id FROM main.feed_items WHERE tenant_id = $t),
                 cur AS (SELECT id, bool_or(is_valid) AS valid FROM {items_table} WHERE id IS NOT NULL GROUP BY id)
        SELECT count(*), count(*) FILTER (WHERE c.id IS NULL), count(*) FILTER (WHERE NOT c.valid),
               max(p.snapshot_id)
        FROM prev p LEFT JOIN cur c USING (id)""",
        {"t": tenant_id},
    ).fetchone()
    codes: list[tuple[str, int]] = []
    if turned:
        codes = [
            (str(c), int(n))
            for c, n in con.execute(
                f"""WITH cur AS (SELECT id FROM {items_table} WHERE id IS NOT NULL GROUP BY id HAVING NOT bool_or(is_valid))
                SELECT i.code, count(DISTINCT i.retailer_id) AS n
                FROM {issues_table} i
                JOIN cur c ON c.id = i.retailer_id
                JOIN main.feed_items p ON p.tenant_id = $t AND p.retailer_id = i.retailer_id
                WHERE i.severity = 'error'
                GROUP BY i.code ORDER BY n DESC, i.code LIMIT 5""",
                {"t": tenant_id},
            ).fetchall()
        ]
    return ShrinkVerdict(
        previous_snapshot_id=prev_snap,
        previous_valid=int(prev_valid or 0),
        new_valid=int(new_valid),
        left_feed=int(left or 0),
        turned_invalid=int(turned or 0),
        threshold=threshold,
        min_items=min_items,
        invalid_codes=tuple(codes),
    )


def confirms_held(con: duckdb.DuckDBPyConnection, tenant_id: str, sha256: str | None) -> str | None:
    """The id of the held snapshot this one confirms: the tenant's latest applied-or-held snapshot was held
    and had different content (a second, different file showing the drop means the drop is real)."""
    row = con.execute(
        """SELECT status, source_sha256, snapshot_id FROM main.feed_snapshots
        WHERE tenant_id = ? AND status IN ('ok', 'not_modified', 'held') ORDER BY taken_at DESC LIMIT 1""",
        [tenant_id],
    ).fetchone()
    if row and row[0] == "held" and sha256 is not None and row[1] != sha256:
        return str(row[2])
    return None
