"""Rebuild the committed demo feeds (kobi_cpas/data/demo/feeds/): `kobi-cpas demo-feeds`.

Three tenants, three formats Meta accepts: CSV, RSS 2.0 XML with the g: namespace, and TSV. Each feed carries a
few deliberate problems so that feed_item_issues and the diagnostics have something to show.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import duckdb

from kobi_cpas.feeds.generator import generate_feed_sql
from kobi_cpas.feeds.xml_items import G_NS

FEEDS_DIR = Path(__file__).resolve().parents[1] / "data" / "demo" / "feeds"


def _rows(n: int, seed: int, brand: str, id_prefix: str, error_share: float) -> tuple[list[str], list[tuple]]:
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    cur = con.execute(
        f"""SELECT * REPLACE (
              CASE WHEN id IS NULL THEN NULL ELSE '{id_prefix}' || substr(id, 4) END AS id,
              replace(title, brand, '{brand}') AS title,
              replace(description, brand, '{brand}') AS description,
              '{brand}' AS brand,
              replace(link, 'shop.example.com', '{id_prefix.lower()}.example.com') AS link,
              CASE WHEN item_group_id IS NULL THEN NULL ELSE '{id_prefix}' || item_group_id END AS item_group_id)
            FROM ({generate_feed_sql(n, seed, error_share)})"""
    )
    cols = [d[0] for d in cur.description]
    return cols, cur.fetchall()


def write_delimited(path: Path, cols: list[str], rows: list[tuple], delimiter: str) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        w.writerow(cols)
        w.writerows(["" if v is None else v for v in r] for r in rows)


def write_rss(path: Path, cols: list[str], rows: list[tuple], title: str) -> None:
    ET.register_namespace("g", G_NS)
    rss = ET.Element("rss", {"version": "2.0"})
    ch = ET.SubElement(rss, "channel")
    ET.SubElement(ch, "title").text = title
    ET.SubElement(ch, "link").text = "https://example.com"
    ET.SubElement(ch, "description").text = f"{title} product feed"
    for r in rows:
        item = ET.SubElement(ch, "item")
        for c, v in zip(cols, r, strict=True):
            if v is not None and v != "":
                ET.SubElement(item, f"{{{G_NS}}}{c}").text = str(v)
    ET.indent(rss)
    ET.ElementTree(rss).write(path, encoding="utf-8", xml_declaration=True)


def build(out: Path = FEEDS_DIR) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cols, rows = _rows(320, 11, "Anatolia Home", "AH", 0.02)
    write_delimited(out / "anatolia_home.csv", cols, rows, ",")
    cols, rows = _rows(160, 23, "Bosphorus Outdoor", "BO", 0.0)
    write_rss(out / "bosphorus_outdoor.xml", cols, rows, "Bosphorus Outdoor")
    cols, rows = _rows(48, 37, "Cappadocia Ceramics", "CC", 0.05)
    write_delimited(out / "cappadocia_ceramics.tsv", cols, rows, "\t")
