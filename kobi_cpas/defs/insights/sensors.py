"""Declarative automation for the insights domain: cpas_dashboard refreshes after the metrics or the manifest
change (the default automation sensor is off unless declared)."""

import dagster as dg

insights_automation_sensor = dg.AutomationConditionSensorDefinition(
    name="insights_automation_sensor",
    target=dg.AssetSelection.assets("cpas_dashboard"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Materializes cpas_dashboard (AutomationCondition.eager) when shared_item_metrics or "
    "execution_manifest were updated.",
)
