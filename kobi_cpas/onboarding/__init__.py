"""Onboarding a brand (pure, no Dagster): the preflight of a tenant before it goes live (what Kobi's token can
read, the catalog's kind, its event sources, each dedicated ad account) and the comparison of a catalog that
already holds items with the tenant's feed (what the first replace keeps, links and leaves)."""
