"""Money: the estimate before anything is submitted, the price of what came back.

The estimate takes the one token estimate (generation/tokens.py: deliberately pessimistic) for the
input and the full `max_output_tokens` cap for the answer. A budget check against it errs towards
refusing; the ledger records the actual usage the vendor reports, and the summary shows both so
the gap is visible.
"""

from __future__ import annotations

from dataclasses import dataclass

from governed_marketing.generation.ledger import UnitEstimate
from governed_marketing.generation.tokens import estimate_input_tokens
from governed_marketing.policy import ModelPrice, Policy


class BudgetExceeded(RuntimeError):
    """Submitting would take the campaign over its budget_usd; nothing was sent."""


def usd(price: ModelPrice | None, input_tokens: int, output_tokens: int, *, discount: float = 1.0) -> float:
    """What the vendor charges for this usage (0 when the model has no price: offline templates)."""
    if price is None:
        return 0.0
    return round((input_tokens * price.input + output_tokens * price.output) / 1_000_000 * discount, 8)


@dataclass(frozen=True)
class Pricing:
    """The vendor's price for one model and transport, as governance.yml states it."""

    price: ModelPrice | None
    discount: float
    max_output_tokens: int

    def cost_of(self, input_tokens: int, output_tokens: int) -> float:
        return usd(self.price, input_tokens, output_tokens, discount=self.discount)

    def estimate(self, body: dict) -> UnitEstimate:
        tokens_in = estimate_input_tokens(body)
        return UnitEstimate(tokens_in, self.max_output_tokens, self.cost_of(tokens_in, self.max_output_tokens))


def pricing_for(policy: Policy, vendor: str, model: str, *, transport: str) -> Pricing:
    """The price list entry for a model ('offline' and unknown vendors cost nothing)."""
    spec = policy.vendors.get(vendor)
    if spec is None:
        return Pricing(price=None, discount=1.0, max_output_tokens=0)
    return Pricing(
        price=spec.prices_usd_per_1m_tokens.get(model),
        discount=spec.batch_discount if transport == "batch" else 1.0,
        max_output_tokens=spec.max_output_tokens,
    )


def check_budget(
    policy: Policy,
    campaign_id: str,
    *,
    vendor: str,
    model: str,
    pricing: Pricing,
    spent_usd: float,
    estimated_usd: float,
    units: int,
) -> None:
    """Refuse before submitting when spent + estimate would exceed the campaign's budget_usd.

    A vendor model with no price in governance.yml cannot be checked against a budget, so a
    budgeted campaign refuses it too.
    """
    budget = policy.campaigns[campaign_id].budget_usd
    if budget is None or units == 0 or vendor not in policy.vendors:
        return
    if pricing.price is None:
        raise BudgetExceeded(
            f"campaigns.{campaign_id}.budget_usd is set but vendors.{vendor}.prices_usd_per_1m_tokens has no "
            f"price for model {model!r}; add it (from the vendor's price list) - nothing was sent"
        )
    if spent_usd + estimated_usd > budget:
        raise BudgetExceeded(
            f"campaign {campaign_id}: {units} unit(s) estimated at ${estimated_usd:.4f} on top of ${spent_usd:.4f} "
            f"already spent would exceed campaigns.{campaign_id}.budget_usd ${budget:.2f}; nothing was sent"
        )
