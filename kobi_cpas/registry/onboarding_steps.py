"""The steps of a Collaborative Ads partnership and how far Meta lets each be automated.

The product spec asks, per marketplace, for each onboarding step to be marked API, hybrid or manual. Meta sets
the upper bound (what its API offers at all); a partnership may choose less (``onboarding_steps`` in the
registry), never more: the registry rejects ``api`` for a step Meta offers only in its UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StepMode = Literal["api", "hybrid", "manual"]
_RANK = {"manual": 0, "hybrid": 1, "api": 2}


@dataclass(frozen=True)
class OnboardingStep:
    key: str
    meta_mode: StepMode  # the most automation Meta's API allows
    why: str  # what Meta offers for it


ONBOARDING_STEPS: tuple[OnboardingStep, ...] = (
    OnboardingStep(
        "retailer_program",
        "manual",
        "a retailer joins Meta's Collaborative Ads program in Commerce Manager; the API only lists the program's "
        "retailers (collaborative_ads_directory)",
    ),
    OnboardingStep(
        "collaboration_request",
        "api",
        "POST /{business}/collaborative_ads_collaboration_requests (send_collaboration_request_job)",
    ),
    OnboardingStep(
        "segment_shared",
        "api",
        "the retailer's (or its marketing partner's) owned_product_catalogs and /{segment}/agencies; needs a "
        "compliant parent catalog the partner may manage",
    ),
    OnboardingStep("brand_accepts", "manual", "Collaboration Center > Partners > Accept assets; no API"),
    OnboardingStep(
        "dedicated_ad_account",
        "hybrid",
        "the brand creates the account in Business Manager; Kobi checks it promotes one retailer's segments",
    ),
    OnboardingStep("people_assigned", "api", "POST /{segment}/assigned_users (assign_catalog_users_job)"),
    OnboardingStep("campaign", "api", "the catalog sales campaign on the segment (create_cpas_campaign_job)"),
)
STEPS_BY_KEY: dict[str, OnboardingStep] = {s.key: s for s in ONBOARDING_STEPS}


def check_step_modes(modes: dict[str, str]) -> dict[str, str]:
    """Registry validation of a partnership's per-step choices: known steps, known modes, within Meta's bound."""
    for key, mode in modes.items():
        step = STEPS_BY_KEY.get(key)
        if step is None:
            raise ValueError(f"unknown onboarding step '{key}' (one of {', '.join(STEPS_BY_KEY)})")
        if mode not in _RANK:
            raise ValueError(f"onboarding step '{key}': mode must be api, hybrid or manual (got {mode!r})")
        if _RANK[mode] > _RANK[step.meta_mode]:
            raise ValueError(
                f"onboarding step '{key}' cannot be {mode}: Meta allows {step.meta_mode} ({step.why})"
            )
    return modes


def step_mode(key: str, partnership_mode: str, overrides: dict[str, str]) -> StepMode:
    """The mode decided for one step: the partnership's own choice for it, else its onboarding_mode for the
    segment step, else what Meta allows."""
    step = STEPS_BY_KEY[key]
    chosen = overrides.get(key) or (partnership_mode if key == "segment_shared" else None) or step.meta_mode
    return chosen if _RANK[chosen] <= _RANK[step.meta_mode] else step.meta_mode  # type: ignore[return-value]
