"""What a content provider is given and what it returns.

A `DraftRequest` holds only what the policy allows to leave: the campaign's fixed system prompt and
the cohort's allow-listed attributes (or, in individual mode, the recipient's allow-listed fields
and pseudonym). Names are never in it, and drafts carry none: the greeting with the recipient's first
name is composed locally (generation/notices.py) after the vendor has answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

#: The placeholder drafts used to greet with (prompt versions before the local greeting). A draft must
#: no longer carry it, nor any other template syntax: the content rules reject and re-ask such a draft.
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
    system_prompt: str  # fixed prefix: brand rules, what may be claimed
    language: str  # ISO 639-1 the draft must be written in
    attributes: dict[str, str | None]  # allow-listed attributes only; data, never instructions
    custom_id: str = ""  # the ledger key, and the Batch API custom_id
    #: The sync call's Idempotency-Key: the ledger key and the paid attempt it belongs to, so a crash
    #: retry of an in-doubt call is answered from the vendor's record while a deliberate re-request
    #: (a failed or rejected draft) is a new call. Empty: the custom_id.
    idempotency_key: str = ""


@dataclass
class DraftResult:
    draft: Draft
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    vendor_request_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DraftFailure:
    """A unit that could not be drafted this time. `reason` never holds request or response text.

    The tokens are what the unit's paid attempts cost although no draft came of them (a rejected
    answer and its re-ask are paid for): the ledger records them so the budget sees the spend.
    """

    unit_id: str
    kind: str  # rate_limit | server | timeout | rejected | refused | filtered | expired | missing | client
    reason: str
    retryable: bool = True
    input_tokens: int = 0
    output_tokens: int = 0


ResultCallback = Callable[[DraftRequest, DraftResult], None]
FailureCallback = Callable[[DraftRequest, DraftFailure], None]
#: Groups of units about to be sent, on the calling thread: each group is one request (identical
#: bodies are sent once). Several groups at once let the caller record them in one statement.
SubmitCallback = Callable[[list[list[DraftRequest]]], None]


class ContentProvider(Protocol):
    """Drafts content for a unit of work. `name` is the vendor key in governance.yml (or 'offline')."""

    name: str
    model: str

    def draft_many(
        self,
        requests: list[DraftRequest],
        *,
        on_result: ResultCallback | None = None,
        on_failure: FailureCallback | None = None,
        on_submit: SubmitCallback | None = None,
    ) -> dict[str, DraftResult]:
        """Draft every request; return results keyed by `unit_id`.

        `on_result` is called on the calling thread as soon as each draft arrives (so the caller can
        persist it before the next one: a crash loses nothing already paid for). Without
        `on_failure`, the first unit that cannot be drafted raises `ProviderError`; with it, such a
        unit is reported there and the others go on. Errors that make every further call pointless
        (quota exhausted, bad credentials) always raise.
        """
        ...
