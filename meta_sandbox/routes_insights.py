"""Ads Insights routes (shared-item metrics), all counted against the ``ads_insights`` usage family.

Graph:
- ``GET /{act_id|campaign_id|adset_id|ad_id}/insights``: synchronous, paged (``limit``/``after``).
- ``POST /{act_id|campaign_id|adset_id|ad_id}/insights`` with the same params: ``{"report_run_id"}``.
- ``GET /{report_run_id}``: id, async_status, async_percent_completion, date_start, date_stop, ... (each read
  moves the job one step along its script).
- ``GET /{report_run_id}/insights``: the job's rows, paged; error 2601 (subcode 1815107) before the job reported
  "Job Completed" at 100 %.
Several report runs may be in flight at once. Every answer's ``x-fb-ads-insights-throttle`` reflects them:
``acc_id_util_pct`` is ``throttle_pct_per_job`` times the account's jobs still running, ``app_id_util_pct`` a
tenth of that over every account's jobs (see ``insights_load``).

Admin (no token):
- ``POST /__sandbox/insights/drift`` {account_id, rollup_skew, total_skew, roas_skew, omit_converted_products,
  too_much_data: {max_days, max_ids, max_fields, variant: subcode|http_500|alternate}, jobs: [{outcome, polls}], clear};
  ``GET`` shows the knobs, ``DELETE`` clears them. Outcomes: completed, failed, skipped, running_at_100, slow,
  not_started (each for the next report run of the account, in order).
- ``POST /__sandbox/insights/config`` {polls_to_complete, restatement_period_seconds, restatement_days,
  product_pool_size, throttle_pct_per_job}.
- ``POST /__sandbox/insights/ads`` {account_id, n_ads, ads_per_adset, adsets_per_campaign}: seed extra ads.
- ``GET /__sandbox/insights/requests``: every insights call with its parameters (POST bodies included).
- ``GET /__sandbox/insights/report_runs``: the report runs (status, polls, early_reads, rows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request

from meta_sandbox import errors as gerr
from meta_sandbox import insights_model as im
from meta_sandbox.server import FAMILY_INSIGHTS, RequestContext, Router, request_json_object

if TYPE_CHECKING:
    from meta_sandbox.server import SandboxApp

INSIGHTS_DEFAULT_LIMIT = 25
INSIGHTS_OBJECT_KINDS = ("ad_account", "campaign", "adset", "ad")


def register(router: Router) -> None:
    for kind in INSIGHTS_OBJECT_KINDS:
        _register_object(router, kind)

    @router.node("report_run", name="report_run.get", family=FAMILY_INSIGHTS)
    def get_report_run(ctx: RequestContext) -> dict[str, Any]:
        run = ctx.node
        if im.expired(ctx.world, run):
            raise gerr.unknown_object(run.id)
        im.log_call(ctx.world, "GET", run.id, "report_run", ctx.params)
        im.poll_report_run(ctx.world, run)
        ctx.insights_load = im.insights_load(ctx.world, run.account_id)
        fields = im.report_run_fields(run)
        return ctx.select(
            fields,
            "AdReportRun",
            defaults=(
                "id",
                "account_id",
                "async_status",
                "async_percent_completion",
                "date_start",
                "date_stop",
                "time_ref",
                "time_completed",
                "is_running",
            ),
        )

    @router.edge("report_run", "insights", name="report_run.insights", family=FAMILY_INSIGHTS)
    def read_report_run(ctx: RequestContext) -> dict[str, Any]:
        run = ctx.node
        if im.expired(ctx.world, run):
            raise gerr.unknown_object(run.id)
        im.log_call(ctx.world, "GET", run.id, "report_run.insights", ctx.params)
        im.check_readable(ctx.world, run)
        ctx.insights_load = im.insights_load(ctx.world, run.account_id)
        return ctx.paginate(run.rows, default_limit=INSIGHTS_DEFAULT_LIMIT)

    @router.admin("/insights/drift", name="admin.insights.drift.set", methods=("POST",))
    def set_drift(app: SandboxApp, request: Request) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            return im.set_drift(app.world, body)

    @router.admin("/insights/drift", name="admin.insights.drift.get", methods=("GET",))
    def get_drift(app: SandboxApp, request: Request) -> Any:
        with app.world.lock:
            return im.describe_drift(app.world)

    @router.admin("/insights/drift", name="admin.insights.drift.clear", methods=("DELETE",))
    def clear_drift(app: SandboxApp, request: Request) -> Any:
        with app.world.lock:
            im.clear_drift(app.world)
        return {"ok": True}

    @router.admin("/insights/config", name="admin.insights.config", methods=("POST",))
    def set_config(app: SandboxApp, request: Request) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            return im.configure(app.world, body)

    @router.admin("/insights/ads", name="admin.insights.ads", methods=("POST",))
    def seed_ads(app: SandboxApp, request: Request) -> Any:
        body = request_json_object(request)
        with app.world.lock:
            return im.seed_extra_ads(
                app.world,
                str(body.get("account_id", "")),
                int(body.get("n_ads", 0)),
                ads_per_adset=int(body.get("ads_per_adset", 10)),
                adsets_per_campaign=int(body.get("adsets_per_campaign", 5)),
            )

    @router.admin("/insights/requests", name="admin.insights.requests", methods=("GET",))
    def insights_requests(app: SandboxApp, request: Request) -> Any:
        with app.world.lock:
            return {"data": im.logged_calls(app.world)}

    @router.admin("/insights/report_runs", name="admin.insights.report_runs", methods=("GET",))
    def report_runs(app: SandboxApp, request: Request) -> Any:
        with app.world.lock:
            return {
                "data": [
                    {
                        **im.report_run_fields(run),
                        "object_id": run.object_id,
                        "polls": run.polls,
                        "early_reads": run.early_reads,
                        "rows": len(run.rows),
                        "params": run.params,
                    }
                    for run in app.world.report_runs.values()
                ]
            }


def _register_object(router: Router, kind: str) -> None:
    @router.edge(kind, "insights", name=f"{kind}.insights", methods=("GET",), family=FAMILY_INSIGHTS)
    def sync_insights(ctx: RequestContext) -> dict[str, Any]:
        im.log_call(ctx.world, "GET", ctx.node.id, "insights", ctx.params)
        _query, rows = im.run_query(ctx.world, kind, ctx.node, ctx.params)
        ctx.insights_load = im.insights_load(ctx.world, _account_id(kind, ctx.node))
        return ctx.paginate(rows, default_limit=INSIGHTS_DEFAULT_LIMIT)

    @router.edge(kind, "insights", name=f"{kind}.insights.async", methods=("POST",), family=FAMILY_INSIGHTS)
    def async_insights(ctx: RequestContext) -> dict[str, Any]:
        im.log_call(ctx.world, "POST", ctx.node.id, "insights", ctx.params)
        run = im.create_report_run(ctx.world, kind, ctx.node, ctx.params)
        ctx.insights_load = im.insights_load(ctx.world, run.account_id)
        return {"report_run_id": run.id}


def _account_id(kind: str, node: Any) -> str:
    return node.id if kind == "ad_account" else node.account_id
