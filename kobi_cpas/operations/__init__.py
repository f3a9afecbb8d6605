"""Operations: cadence compliance with Meta's sync quality bar, and alerts that reach a person.

Pure logic (no Dagster): the Dagster side lives in ``kobi_cpas.defs.operations``."""
