"""A static HTML report of the analyst tables, per tenant: catalog health over time, the top problems with their
calls to action, compliance with Meta's cadences and ROAS by retailer over time, as charts.

Reading (:func:`read_report_data`, set-based SQL on the warehouse) and drawing (:func:`write_report`, Plotly,
with its JavaScript inlined once so the file opens offline) are apart, so the data of every chart can be checked
without a browser. The page carries each chart's data as Plotly writes it (``Plotly.newPlot(id, traces, ...)``).
"""

from __future__ import annotations

import html
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from kobi_cpas.insights.tables import CPAS_DASHBOARD

TOP_PROBLEMS = 5


@dataclass
class TenantReport:
    tenant_id: str
    health: list[tuple[Any, ...]] = field(default_factory=list)  # day, items, eligible_share, items_with_high
    problems: list[tuple[Any, ...]] = field(default_factory=list)  # rank, priority, title, affected, cta
    compliance: list[tuple[Any, ...]] = field(default_factory=list)  # requirement, age_s, required_s, status
    roas: list[tuple[Any, ...]] = field(default_factory=list)  # date, retailer, spend, purchase_value, roas


def _query(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for row in con.execute(sql).fetchall():
        out.setdefault(str(row[0]), []).append(tuple(row[1:]))
    return out


def read_report_data(con: duckdb.DuckDBPyConnection) -> dict[str, TenantReport]:
    """Per tenant, the rows each chart and table of the report shows, from the work database (the view
    cpas_dashboard, which only the analyst file holds, by its SQL)."""
    parts = {
        "health": _query(
            con,
            "SELECT tenant_id, day, items, eligible_share, items_with_high FROM main.catalog_health "
            "ORDER BY tenant_id, day",
        ),
        "problems": _query(
            con,
            "SELECT tenant_id, rank, priority, title, affected_items, call_to_action "
            f"FROM main.catalog_diagnostics_summary WHERE rank <= {TOP_PROBLEMS} ORDER BY tenant_id, rank",
        ),
        "compliance": _query(
            con,
            "SELECT tenant_id, requirement, age_seconds, required_every_seconds, status FROM main.sync_compliance "
            "ORDER BY tenant_id, requirement",
        ),
        "roas": _query(
            con,
            "SELECT tenant_id, date, retailer, sum(spend), sum(purchase_value), "
            f"sum(purchase_value) / nullif(sum(spend), 0) FROM ({CPAS_DASHBOARD.sql}) AS cpas_dashboard "
            "GROUP BY ALL ORDER BY tenant_id, retailer, date",
        ),
    }
    tenants = sorted({t for rows in parts.values() for t in rows})
    return {
        t: TenantReport(t, **{name: rows.get(t, []) for name, rows in parts.items()})  # type: ignore[arg-type]
        for t in tenants
    }


STATUS_COLOURS = {"ok": "#2e7d32"}  # any other status (breached, never) is drawn red
LATE = "#c62828"


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "height": 340,
        "margin": {"l": 55, "r": 55, "t": 45, "b": 40},
        "showlegend": True,
        "legend": {"orientation": "h", "y": -0.2},
        **extra,
    }


def health_chart(r: TenantReport) -> go.Figure:
    # days as text on a category axis: one day of history is one bar, not an axis of milliseconds
    days = [str(row[0]) for row in r.health]
    fig = go.Figure(
        [
            go.Bar(x=days, y=[row[3] for row in r.health], name="items with HIGH problems"),
            # on the overlaying axis, so the line is drawn over the bars
            go.Scatter(
                x=days,
                y=[row[2] for row in r.health],
                name="eligible share",
                mode="lines+markers",
                yaxis="y2",
            ),
        ]
    )
    fig.update_layout(
        _layout(
            "Catalog health",
            yaxis={"title": {"text": "items"}, "rangemode": "tozero"},
            yaxis2={
                "title": {"text": "eligible share"},
                "tickformat": ".0%",
                "range": [0, 1.05],
                "overlaying": "y",
                "side": "right",
            },
            xaxis={"type": "category"},
            bargap=0.6,
        )
    )
    return fig


def compliance_chart(r: TenantReport) -> go.Figure:
    names = [row[0] for row in r.compliance]
    # minutes since the last success against the requirement's window; never succeeded: no bar
    age = [None if row[1] is None else row[1] / 60 for row in r.compliance]
    fig = go.Figure(
        [
            go.Bar(
                x=names,
                y=age,
                name="minutes since last success",
                marker={"color": [STATUS_COLOURS.get(str(row[3]), LATE) for row in r.compliance]},
            ),
            go.Scatter(
                x=names,
                y=[row[2] / 60 for row in r.compliance],
                name="required every (minutes)",
                mode="markers",
            ),
        ]
    )
    fig.update_layout(
        _layout("Sync compliance with Meta's cadences", yaxis={"type": "log", "title": {"text": "minutes"}})
    )
    return fig


def roas_chart(r: TenantReport) -> go.Figure:
    by_retailer: dict[str, list[tuple[Any, ...]]] = {}
    for row in r.roas:
        by_retailer.setdefault(str(row[1]), []).append(row)
    fig = go.Figure(
        [
            go.Scatter(
                x=[row[0] for row in rows], y=[row[4] for row in rows], name=retailer, mode="lines+markers"
            )
            for retailer, rows in sorted(by_retailer.items())
        ]
    )
    fig.update_layout(
        _layout("ROAS by retailer (segment purchase value / spend)", yaxis={"title": {"text": "ROAS"}})
    )
    return fig


def _problems_table(r: TenantReport) -> str:
    if not r.problems:
        return "<p>No open problem.</p>"
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v if v is not None else ''))}</td>" for v in row) + "</tr>"
        for row in r.problems
    )
    head = "".join(f"<th>{h}</th>" for h in ("#", "priority", "problem", "items", "what to do"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def chart_id(tenant_id: str, chart: str) -> str:
    return f"{chart}-{tenant_id}"


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}h2{border-top:1px solid #ccc;padding-top:1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;"
    "vertical-align:top}.grid{display:grid;grid-template-columns:1fr;gap:1em;max-width:1100px}"
)


def write_report(data: dict[str, TenantReport], path: Path, generated_at: datetime) -> dict[str, list[str]]:
    """Write the page to ``path`` (atomically: a reader never sees half a file). Returns chart id -> the names
    of its series."""
    charts: dict[str, list[str]] = {}
    sections = []
    for r in data.values():
        divs = []
        for name, fig in (
            ("health", health_chart(r)),
            ("compliance", compliance_chart(r)),
            ("roas", roas_chart(r)),
        ):
            cid = chart_id(r.tenant_id, name)
            charts[cid] = [str(t.name) for t in fig.data]
            divs.append(
                fig.to_html(
                    full_html=False,
                    include_plotlyjs=False,
                    div_id=cid,
                    config={"displayModeBar": False, "responsive": True},
                )
            )
        sections.append(
            f"<h2>{html.escape(r.tenant_id)}</h2><div class='grid'>{''.join(divs)}</div>"
            f"<h3>Top problems and what to do</h3>{_problems_table(r)}"
        )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Kobi CPAS report</title>"
        f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
        f"<h1>Kobi CPAS report</h1><p>Generated {generated_at:%Y-%m-%d %H:%M %Z} from the analyst tables "
        "(catalog_health, catalog_diagnostics_summary, sync_compliance, cpas_dashboard).</p>"
        + ("".join(sections) or "<p>No tenant has data yet.</p>")
        + "</body></html>"
    )
    # A temporary name of its own: two runs writing the report at once (two `make run`s) must not rename each
    # other's file away.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return charts
