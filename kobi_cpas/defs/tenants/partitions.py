"""Tenants are dynamic partitions, kept equal to the registry by tenant_partitions_sensor."""

import dagster as dg

TENANT_PARTITIONS_NAME = "tenant"
tenant_partitions = dg.DynamicPartitionsDefinition(name=TENANT_PARTITIONS_NAME)
