"""What a content provider is given and what it returns.

A `DraftRequest` holds only what the policy allows to leave: the campaign's fixed system prompt and
the cohort's allow-listed attributes (or, in individual mode, the recipient's allow-listed fields
and pseudonym). Names are never in it: drafts carry a `{{ first_name }}` placeholder that is filled
in locally, after the vendor has answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

FIRST_NAME_PLACEHOLDER = "{{ first_name }}"


class Draft(BaseModel):
    """The structured output every provider must produce (a strict JSON schema for the vendor)."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=200)
    preheader: str = Field(max_length=300)
    body: str = Field(min_length=1)


@dataclass(frozen=True)
class DraftRequest:
    campaign_id: str
    unit_id: str  # cohort_id in cohort mode, recipient pseudonym in individual mode
    prompt_version: str
    system_prompt: str  # fixed prefix: brand rules, placeholder rule, what may be claimed
    language: str  # ISO 639-1 the draft must be written in
    attributes: dict[str, str | None]  # allow-listed attributes only; data, never instructions


@dataclass
class DraftResult:
    draft: Draft
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    vendor_request_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class ContentProvider(Protocol):
    """Drafts content for a unit of work. `name` is the vendor key in governance.yml (or 'offline')."""

    name: str
    model: str

    def draft_many(self, requests: list[DraftRequest]) -> dict[str, DraftResult]:
        """Draft every request; return results keyed by `unit_id`. Raise on what cannot be drafted."""
        ...
