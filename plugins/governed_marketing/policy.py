"""governance.yml: the privacy policy as code, loaded and validated in one place.

Every part of the product that enforces or reports policy reads it through `load_policy()`; a
malformed file stops the run with a `PolicyError` that names the offending key.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from governed_marketing.errors import PolicyError
from governed_marketing.privacy.periods import PERIOD, parse_period

CONSENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
VOCABULARY_TERM = re.compile(r"^[^\W\d_][^\W_]*(?:_[^\W_]+)*$")
#: Contract columns the CRM fills with free text: sent to a vendor only as terms of their vocabulary
#: (`vocabularies.<field>`); without one, none of their values leaves.
FREE_TEXT_FIELDS = frozenset({"interests", "last_purchase_category"})
#: Request attributes named differently from the allow-listed field they come from
#: (generation_cohorts carries one `interest`: the first of `interests`).
ATTRIBUTE_FIELDS = {"interest": "interests"}
#: Columns that single out a person on their own: the CRM key and every column the dbt project
#: classifies `meta.pii: direct` (tests/dbt checks this set against the project's classification).
#: A purpose may never allow-list one of them in `fields`.
DIRECT_IDENTIFIERS = frozenset(
    {"contact_id", "email", "email_normalized", "first_name", "last_name", "phone", "notes", "details"}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Controller(_Strict):
    name: str
    contact: str
    dpo: str
    address: str | None = None


class Dpia(_Strict):
    required: bool
    reference: str | None = None


class Purpose(_Strict):
    description: str
    lawful_basis: Literal[
        "consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"
    ]
    requires_consent: list[str] = Field(default_factory=list)
    consent_max_age_days: int = Field(gt=0)
    fields: list[str] = Field(min_length=1)
    vendors: list[str] = Field(default_factory=list)
    dpia: Dpia

    @field_validator("requires_consent")
    @classmethod
    def _consent_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not CONSENT_NAME.match(name):
                raise ValueError(f"consent name {name!r} must be lower_snake_case")
        return value

    @model_validator(mode="after")
    def _basis_matches_consents(self) -> Purpose:
        if self.lawful_basis == "consent" and not self.requires_consent:
            raise ValueError("lawful_basis 'consent' needs at least one entry in requires_consent")
        if self.dpia.required and not self.dpia.reference:
            raise ValueError("dpia.required is true but dpia.reference is empty (Art. 35)")
        return self


class Campaign(_Strict):
    purpose: str
    personalization: Literal["cohort", "individual"] = "cohort"
    prompt: str
    approval: Literal["auto", "required"] = "auto"
    #: Refuse to submit when spent + estimated cost of this campaign would exceed it (None: no cap).
    budget_usd: float | None = Field(default=None, ge=0)


class ModelPrice(_Strict):
    """USD per million tokens, from the vendor's price list."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)


class VendorLimits(_Strict):
    """The account's rate limits at the vendor, for vendors that do not send them in headers.

    A ceiling the sync limiter never exceeds, and its pace from the first call (without it, the pace
    is learned from the vendor's headers or its 429s).
    """

    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)


class Vendor(_Strict):
    role: Literal["processor", "controller", "joint_controller"]
    dpa_signed: date | None = None
    region: str
    transfer_mechanism: Literal["adequacy", "SCC", "BCR", "DPF", "none"] | None = None
    store: bool = False
    #: Cap on each draft's output; also the output side of the pre-submit cost estimate.
    max_output_tokens: int = Field(default=800, gt=0)
    #: Share of the price the Batch API charges (0.5 = half price).
    batch_discount: float = Field(default=1.0, gt=0, le=1)
    prices_usd_per_1m_tokens: dict[str, ModelPrice] = Field(default_factory=dict)
    limits: VendorLimits = Field(default_factory=VendorLimits)


class Cohorts(_Strict):
    k: int = Field(ge=2)
    generalize: list[str] = Field(min_length=1)
    fallback_language: str = Field(pattern=r"^[a-z]{2}$")


class Content(_Strict):
    default_language: str = Field(pattern=r"^[a-z]{2}$")
    max_body_chars: int = Field(gt=0)
    unsubscribe_url: str
    allowed_urls: list[str] = Field(default_factory=list)


class DeliveryCampaign(_Strict):
    """Who a campaign's messages come from and where replies go."""

    sender: str = Field(pattern=r"^[^<>@\s][^<>]*<[^<>@\s]+@[^<>@\s]+>$|^[^<>@\s]+@[^<>@\s]+$")
    reply_to: str | None = Field(default=None, pattern=r"^[^<>@\s]+@[^<>@\s]+$")


class DeliveryRetry(_Strict):
    """4xx answers: retried in the same run after `backoff_seconds`, doubled each time, `attempts` in all."""

    attempts: int = Field(default=3, ge=1, le=20)
    backoff_seconds: float = Field(default=30, ge=0)


class Delivery(_Strict):
    """Sending the outbox by SMTP (delivery.*). Off when no relay is configured (smtp_default / GMP_SMTP_URL)."""

    #: Messages per minute across all connections; None sends as fast as the relay answers.
    per_minute_cap: int | None = Field(default=None, gt=0)
    #: SMTP connections open at once.
    connections: int = Field(default=2, ge=1, le=32)
    #: RFC 8058 one-click endpoint (the Airflow plugin serves it at /unsubscribe/); the token is appended.
    unsubscribe_url: str = Field(pattern=r"^https://")
    #: The mailto of List-Unsubscribe; mails to it land in `unsubscribe_mailbox` (read by the privacy DAG).
    unsubscribe_mailto: str = Field(pattern=r"^[^<>@\s]+@[^<>@\s]+$")
    retry: DeliveryRetry = Field(default_factory=DeliveryRetry)
    #: A message still answered 4xx this many hours after it was planned (its time in the queue, as an
    #: MTA's maximal queue lifetime) is given up: `undeliverable` for the campaign, never tried again.
    give_up_deferred_after_hours: float = Field(gt=0, le=720)
    campaigns: dict[str, DeliveryCampaign] = Field(default_factory=dict)


class Freshness(_Strict):
    """How old the newest CRM load may be at the as-of time before dbt warns, then fails."""

    warn_after_hours: int = Field(gt=0)
    error_after_hours: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Freshness:
        if self.error_after_hours < self.warn_after_hours:
            raise ValueError("error_after_hours must be at least warn_after_hours")
        return self


SKEW = re.compile(r"^(\d+)\s*(m|min|h|d)$")


def vocabulary_key(value: str) -> str:
    """How a value is matched against a vocabulary: case, spaces, hyphens and underscores do not matter."""
    return re.sub(r"[\s_-]+", "_", value.strip().casefold()).strip("_")


class Vocabulary(_Strict):
    """The values a free-text field may take when it is sent to a vendor, and synonyms mapped onto them."""

    terms: list[str] = Field(min_length=1)
    synonyms: dict[str, str] = Field(default_factory=dict)

    @field_validator("terms")
    @classmethod
    def _terms(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, term in enumerate(value):
            if not isinstance(term, str) or not VOCABULARY_TERM.match(term) or vocabulary_key(term) != term:
                raise ValueError(
                    f"item {index}: {term!r} must be a lower-case word or words joined by '_' (like home_decor)"
                )
            if term in seen:
                raise ValueError(f"item {index}: {term!r} is listed twice")
            seen.add(term)
        return value

    @model_validator(mode="after")
    def _synonyms(self) -> Vocabulary:
        for spelling, term in self.synonyms.items():
            if term not in self.terms:
                raise ValueError(f"synonyms.{spelling}: {term!r} is not one of the terms")
            if vocabulary_key(spelling) in self.terms and vocabulary_key(spelling) != term:
                raise ValueError(f"synonyms.{spelling}: is itself the term {vocabulary_key(spelling)!r}")
        return self

    def map(self, value: object) -> str | None:
        """The term a value stands for (case, spacing, synonyms), or None when it is not in the vocabulary."""
        if not isinstance(value, str):
            return None
        key = vocabulary_key(value)
        if key in self.terms:
            return key
        for spelling, term in self.synonyms.items():
            if vocabulary_key(spelling) == key:
                return term
        return None


class Ingest(_Strict):
    max_quarantine_share: float = Field(ge=0, le=1)
    #: None: no freshness check (dbt's freshness test then passes with nothing to compare).
    freshness: Freshness | None = None
    #: How far past the load time an `updated_at` may lie (clock skew between systems): `30m`, `2h`, `1d`.
    max_future_skew: str
    #: Where the CRM data comes from: the CSV drop folder (default) or a HubSpot pull (the `hubspot` block).
    source: Literal["csv", "hubspot"] = "csv"

    @field_validator("max_future_skew")
    @classmethod
    def _skew(cls, value: str) -> str:
        if not SKEW.match(str(value).strip()):
            raise ValueError(f"{value!r} is not a duration like 30m, 2h or 1d")
        return str(value).strip()

    @property
    def future_skew(self) -> timedelta:
        amount, unit = SKEW.match(self.max_future_skew).groups()
        return timedelta(minutes=int(amount)) * {"m": 1, "min": 1, "h": 60, "d": 1440}[unit]


#: Contract columns a HubSpot property may fill (contact_id, created_at, updated_at come from the object).
HUBSPOT_MAPPABLE = frozenset(
    ("email", "first_name", "last_name", "phone", "birth_date", "country", "language", "city")
    + ("lifecycle_stage", "interests", "notes")
)


class HubSpot(_Strict):
    """How a HubSpot portal maps to the CRM export contract (crm/hubspot.py)."""

    #: HubSpot contact property -> contacts.csv column.
    properties: dict[str, str] = Field(min_length=1)
    #: HubSpot lifecycle stage (internal value) -> the contract's stage; an unmapped stage is left empty.
    lifecycle_stages: dict[str, str] = Field(default_factory=dict)
    #: Subscription type id -> the consent name (consent_events.purpose) it proves.
    subscription_types: dict[str, str] = Field(min_length=1)
    #: Legal bases under which a SUBSCRIBED status is a consent (a grant); others prove nothing.
    consent_legal_bases: list[str] = Field(min_length=1)
    #: The privacy notice in force on the HubSpot forms that collect the consents.
    notice_version: str | None = None
    page_size: int = Field(default=200, ge=1, le=200)

    @field_validator("properties")
    @classmethod
    def _columns(cls, value: dict[str, str]) -> dict[str, str]:
        for prop, column in value.items():
            if column not in HUBSPOT_MAPPABLE:
                columns = ", ".join(sorted(HUBSPOT_MAPPABLE))
                raise ValueError(f"{prop}: {column!r} is not a contacts.csv column ({columns})")
        if "email" not in value.values():
            raise ValueError("no property maps to email: the contract identifies people by email")
        return value

    @field_validator("lifecycle_stages")
    @classmethod
    def _stages(cls, value: dict[str, str]) -> dict[str, str]:
        from governed_marketing.crm.contract import LIFECYCLE_STAGES

        for stage, mapped in value.items():
            if mapped not in LIFECYCLE_STAGES:
                raise ValueError(f"{stage}: {mapped!r} is not a contract stage ({', '.join(LIFECYCLE_STAGES)})")
        return {k.lower(): v for k, v in value.items()}


class Dsr(_Strict):
    deadline: str
    extension: str


class RunReports(_Strict):
    """How long the per-run report folders (`reports/runs/<dag_id>/<run_id>/`) are kept.

    A folder goes when it is older than `max_age` or beyond the newest `keep_last` of its DAG;
    the latest report and the run being written are always kept.
    """

    max_age: str
    keep_last: int = Field(ge=1)

    @field_validator("max_age")
    @classmethod
    def _age(cls, value: str) -> str:
        if not PERIOD.match(str(value).strip()):
            raise ValueError(f"{value!r} is not a period like 30d, 12mo or 1y")
        return str(value).strip()


ROLE = re.compile(r"^[a-z][a-z0-9_-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ReviewEntry(_Strict):
    """When something was last reviewed, by which role, and how often it must be (`every: 12mo`)."""

    last_reviewed: date
    by: str
    every: str

    @field_validator("by")
    @classmethod
    def _role(cls, value: str) -> str:
        if not ROLE.match(value):
            raise ValueError(f"{value!r} must be a role name like dpo or privacy-office")
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str) -> str:
        if not PERIOD.match(str(value).strip()):
            raise ValueError(f"{value!r} is not a period like 30d, 12mo or 1y")
        return str(value).strip()

    def due(self) -> date:
        """The date the next review is due (last review + interval)."""
        return self.last_reviewed + parse_period(self.every, key="review.every")


class PolicyReview(ReviewEntry):
    #: sha256 of governance.yml as reviewed, over its content without the `review` block (see content_hash).
    sha256: str | None = None

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not SHA256.match(value):
            raise ValueError(f"{value!r} is not a lower-case hex sha256 (run `gmp policy check` to print it)")
        return value


class ConsentNoticeReview(ReviewEntry):
    #: The privacy notice version in force (raw consent events carry `notice_version`).
    current_version: str
    #: Earlier versions whose consents the reviewer found still cover the processing (no material change).
    accepted_versions: list[str] = Field(default_factory=list)


class VendorReview(_Strict):
    dpa: ReviewEntry | None = None
    transfer_mechanism: ReviewEntry | None = None


class Review(_Strict):
    """Review metadata (the regular assessment, see assessment.py): what was reviewed, when, by whom."""

    policy: PolicyReview
    retention: ReviewEntry
    consent_notice: ConsentNoticeReview
    #: Per purpose id: the review of its DPIA.
    dpia: dict[str, ReviewEntry] = Field(default_factory=dict)
    #: Per vendor id: the reviews of its DPA and its transfer mechanism.
    vendors: dict[str, VendorReview] = Field(default_factory=dict)


class Policy(_Strict):
    """The validated policy. Thresholds live here and nowhere else."""

    version: int
    controller: Controller
    purposes: dict[str, Purpose] = Field(min_length=1)
    campaigns: dict[str, Campaign] = Field(min_length=1)
    vendors: dict[str, Vendor] = Field(default_factory=dict)
    minimum_age: dict[str, int]
    unknown_age: Literal["include", "exclude"]
    cohorts: Cohorts
    content: Content
    #: Per allow-listed free-text field, the values that may be sent to a vendor (see FREE_TEXT_FIELDS).
    vocabularies: dict[str, Vocabulary] = Field(default_factory=dict)
    ingest: Ingest
    #: The HubSpot source's mapping; required when ingest.source is hubspot.
    hubspot: HubSpot | None = None
    retention: dict[str, str]
    dsr: Dsr
    #: Retention of the per-run report folders; None keeps them all (as before the key existed).
    run_reports: RunReports | None = None
    #: SMTP delivery of the outbox; None: no campaign is sent (deliver: off).
    delivery: Delivery | None = None
    #: Review metadata for the regular assessment; None in a policy never reviewed (a finding, not an error).
    review: Review | None = None
    source_path: Path | None = Field(default=None, exclude=True)

    @field_validator("minimum_age")
    @classmethod
    def _ages(cls, value: dict[str, int]) -> dict[str, int]:
        if "default" not in value:
            raise ValueError("needs a 'default' entry")
        for country, age in value.items():
            if country != "default" and not re.fullmatch(r"[A-Z]{2}", country):
                raise ValueError(f"{country!r} is not an ISO 3166-1 alpha-2 code")
            if not 0 < age < 100:
                raise ValueError(f"{country}: age {age} out of range")
        return value

    @field_validator("retention")
    @classmethod
    def _periods(cls, value: dict[str, str]) -> dict[str, str]:
        for store, period in value.items():
            if not PERIOD.match(str(period).strip()):
                raise ValueError(f"{store}: {period!r} is not a period like 30d, 24mo or 6y")
        return value

    @model_validator(mode="after")
    def _references(self) -> Policy:
        for campaign_id, campaign in self.campaigns.items():
            if campaign.purpose not in self.purposes:
                raise ValueError(
                    f"campaigns.{campaign_id}.purpose: {campaign.purpose!r} is not one of purposes "
                    f"({', '.join(self.purposes)})"
                )
        for purpose_id, purpose in self.purposes.items():
            for name in purpose.fields:
                if name.strip().lower() in DIRECT_IDENTIFIERS:
                    raise ValueError(
                        f"purposes.{purpose_id}.fields: {name!r} is a direct identifier; a purpose may "
                        "allow-list attributes, never a column that names the person"
                    )
            for vendor in purpose.vendors:
                if vendor not in self.vendors:
                    raise ValueError(f"purposes.{purpose_id}.vendors: {vendor!r} is not declared under vendors")
            for attr in self.cohorts.generalize:
                if attr not in purpose.fields:
                    raise ValueError(f"cohorts.generalize: {attr!r} is not in purposes.{purpose_id}.fields")
        if self.delivery is not None:
            for campaign_id in self.delivery.campaigns:
                if campaign_id not in self.campaigns:
                    raise ValueError(
                        f"delivery.campaigns.{campaign_id}: not one of campaigns ({', '.join(self.campaigns)})"
                    )
        if self.review is not None:
            for purpose_id in self.review.dpia:
                if purpose_id not in self.purposes:
                    raise ValueError(f"review.dpia.{purpose_id}: not one of purposes ({', '.join(self.purposes)})")
            for vendor_id in self.review.vendors:
                if vendor_id not in self.vendors:
                    raise ValueError(f"review.vendors.{vendor_id}: not declared under vendors")
        if self.ingest.source == "hubspot" and self.hubspot is None:
            raise ValueError("ingest.source: hubspot needs the hubspot block (properties, subscription_types, ...)")
        if self.hubspot is not None:
            consents = {c for purpose in self.purposes.values() for c in purpose.requires_consent}
            for type_id, consent in self.hubspot.subscription_types.items():
                if consent not in consents:
                    raise ValueError(
                        f"hubspot.subscription_types.{type_id}: {consent!r} is not a consent any purpose requires "
                        f"({', '.join(sorted(consents))})"
                    )
        # A vocabulary may outlive its field's place in an allow-list; a name nobody sends is a typo.
        fields = FREE_TEXT_FIELDS | {f for purpose in self.purposes.values() for f in purpose.fields}
        for name in self.vocabularies:
            if name not in fields:
                raise ValueError(
                    f"vocabularies.{name}: not a field that can be sent to a vendor (one of: "
                    f"{', '.join(sorted(fields))})"
                )
        return self

    # ---- helpers used across the product -------------------------------------------------
    def campaign_ids(self) -> list[str]:
        return sorted(self.campaigns)

    def purpose_of(self, campaign_id: str) -> Purpose:
        try:
            return self.purposes[self.campaigns[campaign_id].purpose]
        except KeyError:
            raise PolicyError(f"governance.yml: campaigns: no campaign {campaign_id!r}") from None

    def minimum_age_for(self, country: str | None) -> int:
        return self.minimum_age.get((country or "").upper(), self.minimum_age["default"])

    def all_consents(self) -> list[str]:
        return sorted({c for p in self.purposes.values() for c in p.requires_consent})

    def vocabulary_of(self, attribute: str) -> Vocabulary | None:
        """The vocabulary a request attribute is held to; an empty one for free text without a declaration.

        None: the attribute is not free text and has no vocabulary (language, country, lifecycle stage
        are checked by the CRM contract).
        """
        field = ATTRIBUTE_FIELDS.get(attribute, attribute)
        if field in self.vocabularies:
            return self.vocabularies[field]
        if field in FREE_TEXT_FIELDS:
            return Vocabulary.model_construct(terms=[], synonyms={})
        return None

    def prompt_path(self, campaign_id: str) -> Path:
        base = self.source_path.parent if self.source_path else Path.cwd()
        return base / self.campaigns[campaign_id].prompt


def _format_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid policy"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def content_hash(text: str) -> str:
    """sha256 of the policy's content without its `review` block (a file cannot hold its own hash).

    Canonical JSON of the parsed YAML: comments and layout do not count, every value does.
    """
    import hashlib
    import json

    raw = yaml.safe_load(text)
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k != "review"}
    canonical = json.dumps(raw, sort_keys=True, default=str, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_policy(text: str, *, path: Path) -> Policy:
    """Validate policy YAML; raise PolicyError naming every offending key."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: expected a mapping at the top level")
    try:
        policy = Policy.model_validate({**raw, "source_path": path})
    except ValidationError as exc:
        raise PolicyError(_format_error(path, exc)) from None
    for campaign_id in policy.campaigns:
        prompt = policy.prompt_path(campaign_id)
        if not prompt.is_file():
            raise PolicyError(f"{path}: campaigns.{campaign_id}.prompt: file {prompt} does not exist")
    return policy


@cache
def _load_cached(path: Path, mtime_ns: int) -> Policy:
    return parse_policy(path.read_text(encoding="utf-8"), path=path)


def load_policy(path: Path | None = None) -> Policy:
    """Load governance.yml (from settings unless a path is given)."""
    if path is None:
        from governed_marketing.settings import get_settings

        path = get_settings().policy_path
    path = Path(path).resolve()
    if not path.is_file():
        raise PolicyError(f"{path}: governance policy file not found (set GMP_POLICY to its path)")
    return _load_cached(path, path.stat().st_mtime_ns)
