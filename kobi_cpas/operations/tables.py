"""Analyst tables of the operations domain: ``sync_compliance`` and ``pipeline_alerts``."""

from __future__ import annotations

from kobi_cpas.warehouse.specs import TableSpec, col

# A run starts at its schedule's tick and takes a while after it: one 15-minute tick of slack on top of each
# requirement keeps a run that is merely in progress from counting as a breach.
SLACK_SECONDS = 15 * 60

SYNC_COMPLIANCE = TableSpec(
    name="sync_compliance",
    domain="operations",
    comment="Cadence compliance per tenant with Meta's catalog quality bar: a full replace at least every 24 h, "
    "new and changed items within 1 h (update feed), price and stock within 15 min (Batch API), diagnostics "
    "polled hourly, shared-item insights pulled daily. Rebuilt every 15 minutes from the Dagster "
    "materializations of the asset whose success counts.",
    key=("tenant_id", "requirement"),
    columns=(
        col("tenant_id", "VARCHAR", "Kobi tenant id (from the tenant registry)", False),
        col(
            "requirement",
            "VARCHAR",
            "full_replace, delta_update, volatile_batch, diagnostics or insights",
            False,
        ),
        col(
            "asset_key",
            "VARCHAR",
            "The asset whose materialization for the tenant's partition counts as a success: "
            "replace_feed_upload, update_feed_upload, price_stock_batch, catalog_diagnostics or "
            "shared_item_metrics (any date partition of the tenant in the last 35 days)",
            False,
        ),
        col("required_every_seconds", "INTEGER", "Meta's maximum interval between two successes", False),
        col(
            "last_success_at",
            "TIMESTAMPTZ",
            "Latest materialization of asset_key for the tenant (NULL: never)",
        ),
        col("age_seconds", "DOUBLE", "Seconds from last_success_at to evaluated_at (NULL: never)"),
        col(
            "due_at",
            "TIMESTAMPTZ",
            "When the requirement breaches without a new success: last_success_at + required_every_seconds + "
            f"{SLACK_SECONDS} s of slack",
        ),
        col(
            "within_requirement",
            "BOOLEAN",
            f"age_seconds <= required_every_seconds + {SLACK_SECONDS} (one 15-minute schedule tick of slack: "
            "a run takes time after its tick); false when never succeeded",
            False,
        ),
        col("status", "VARCHAR", "ok, breached (too old) or never (no success recorded)", False),
        col(
            "pending",
            "VARCHAR",
            "What is in flight or why it is late, when known: requests still processing at Meta "
            "(catalog_syncs) and the last failed run after the last success; NULL when nothing is known",
        ),
        col("evaluated_at", "TIMESTAMPTZ", "When the row was computed", False),
    ),
)

PIPELINE_ALERTS = TableSpec(
    name="pipeline_alerts",
    domain="operations",
    comment="One row per alert raised for a person: a failed Dagster run or a breach of Meta's sync cadence "
    "(one per breach episode), with its webhook delivery. Secrets are redacted from every message.",
    key=("alert_id",),
    columns=(
        col(
            "alert_id",
            "VARCHAR",
            "Deterministic id (md5): of the run id for run_failure; of tenant, requirement and the last "
            "success before the breach for compliance_breach, so one breach episode is one alert",
            False,
        ),
        col("kind", "VARCHAR", "run_failure or compliance_breach", False),
        col("tenant_id", "VARCHAR", "Kobi tenant id, when the alert concerns one tenant"),
        col("job_name", "VARCHAR", "The failed run's job (run_failure)"),
        col("requirement", "VARCHAR", "The breached requirement of sync_compliance (compliance_breach)"),
        col("run_id", "VARCHAR", "The failed Dagster run (run_failure)"),
        col("message", "VARCHAR", "What happened, as sent to the webhook (redacted)", False),
        col("created_at", "TIMESTAMPTZ", "When the alert was raised", False),
        col(
            "delivery_status",
            "VARCHAR",
            "delivered (the webhook answered 2xx), failed (retried on the next evaluation of "
            "pipeline_alerts_sensor, at most 20 attempts) or not_configured (no KOBI_CPAS_ALERT_WEBHOOK_URL)",
            False,
        ),
        col("delivery_attempts", "INTEGER", "Webhook POSTs tried so far", False),
        col("last_attempt_at", "TIMESTAMPTZ", "When the last POST was tried"),
        col("delivered_at", "TIMESTAMPTZ", "When the webhook accepted the alert"),
        col("delivery_error", "VARCHAR", "Why the last POST failed (redacted)"),
        col(
            "resolved_at",
            "TIMESTAMPTZ",
            "compliance_breach: when the requirement was met again (the episode's recovery); NULL while open",
        ),
    ),
)

ANALYST_TABLES = (SYNC_COMPLIANCE, PIPELINE_ALERTS)
