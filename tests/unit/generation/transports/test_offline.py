"""The offline provider: deterministic template drafts in every supported language, and its selection."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from governed_marketing.generation.base import FIRST_NAME_PLACEHOLDER, DraftRequest
from governed_marketing.generation.notices import LANGUAGES, texts_for
from governed_marketing.generation.providers import build_provider, provider_description
from governed_marketing.generation.transports.offline import OFFLINE_LANGUAGES, OfflineProvider
from governed_marketing.policy import Policy, parse_policy
from governed_marketing.settings import Settings
from governed_marketing.validation.patterns import TEMPLATE_SYNTAX

REPO_ROOT = Path(__file__).resolve().parents[4]
URL = re.compile(r"https?://|www\.|\b[\w-]+\.(?:com|org|net|de|fr|es|it|nl|pl|pt|se|eu|io)\b", re.IGNORECASE)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
FULL_ATTRIBUTES: dict[str, str | None] = {
    "language": "en",
    "country": "DE",
    "lifecycle_stage": "customer",
    "interests": "running;yoga",
    "last_purchase_category": "shoes",
}
# Attribute values a careless CRM export could carry: none of it may reach a draft as contact data.
HOSTILE_ATTRIBUTES: dict[str, str | None] = {
    "country": "DE https://evil.example.com",
    "lifecycle_stage": "customer",
    "interests": "yoga, mail me at anna@example.com, call +49 30 1234567",
    "last_purchase_category": "shoes www.shop.de/sale {{ 7 * 7 }}",
}


def _request(language: str = "en", attributes: dict[str, str | None] | None = None, unit_id: str = "c1"):
    return DraftRequest(
        campaign_id="spring_newsletter",
        unit_id=unit_id,
        prompt_version="newsletter_v1",
        system_prompt="You write short marketing emails.",
        language=language,
        attributes=dict(FULL_ATTRIBUTES if attributes is None else attributes),
    )


def _text(draft) -> str:
    return "\n".join((draft.subject, draft.preheader, draft.body))


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "newsletter_v1.md").write_text("You write short marketing emails.\n")
    text = (REPO_ROOT / "governance.yml").read_text(encoding="utf-8")
    return parse_policy(text, path=tmp_path / "governance.yml")


@pytest.mark.parametrize("language", OFFLINE_LANGUAGES)
def test_offline_draft_carries_no_greeting_and_no_template_syntax_in_every_language(language: str) -> None:
    draft = OfflineProvider().draft(_request(language))
    text = _text(draft)

    assert FIRST_NAME_PLACEHOLDER not in text
    assert not re.search(TEMPLATE_SYNTAX, text), text
    assert not draft.body.startswith(texts_for(language).greeting.split(" ")[0])


@pytest.mark.parametrize("language", OFFLINE_LANGUAGES)
def test_offline_draft_has_no_url_email_or_phone_in_every_language(language: str) -> None:
    for attributes in (FULL_ATTRIBUTES, HOSTILE_ATTRIBUTES):
        text = _text(OfflineProvider().draft(_request(language, attributes)))

        assert not URL.search(text), text
        assert not EMAIL.search(text), text
        assert not PHONE.search(text), text


@pytest.mark.parametrize("language", OFFLINE_LANGUAGES)
def test_offline_draft_has_no_unsubscribe_notice_in_every_language(language: str, policy: Policy) -> None:
    text = _text(OfflineProvider().draft(_request(language))).lower()

    assert "unsubscribe" not in text
    assert policy.content.unsubscribe_url not in text


def test_offline_supports_every_language_of_the_greeting_table() -> None:
    assert set(OFFLINE_LANGUAGES) == set(LANGUAGES)


def test_offline_draft_is_written_in_the_requested_language() -> None:
    provider = OfflineProvider()

    assert provider.draft(_request("de")).subject == "Neuheiten, die Ihnen gefallen könnten"
    assert provider.draft(_request("fr")).subject == "Des nouveautés qui pourraient vous plaire"
    assert provider.draft(_request("da")).subject == "Nyheder, vi tror, du vil kunne lide"


def test_offline_draft_falls_back_to_english_for_an_unsupported_language() -> None:
    provider = OfflineProvider()

    assert provider.draft(_request("ja")) == provider.draft(_request("en"))


def test_offline_draft_is_deterministic() -> None:
    assert OfflineProvider().draft(_request("it")) == OfflineProvider().draft(_request("it"))


def test_offline_draft_varies_with_lifecycle_stage() -> None:
    provider = OfflineProvider()
    drafts = {
        stage: provider.draft(_request("en", {**FULL_ATTRIBUTES, "lifecycle_stage": stage}))
        for stage in ("subscriber", "lead", "customer", "churned")
    }

    assert len({d.subject for d in drafts.values()}) == 4
    assert len({d.body for d in drafts.values()}) == 4


def test_offline_draft_mentions_interests_purchase_category_and_country() -> None:
    draft = OfflineProvider().draft(_request("en"))

    assert draft.preheader == "Ideas around running and yoga"
    assert "running and yoga" in draft.body
    assert "shoes" in draft.body
    assert "DE" in draft.body


def test_offline_draft_leaves_out_attributes_generalized_away() -> None:
    attributes = dict.fromkeys(FULL_ATTRIBUTES)
    draft = OfflineProvider().draft(_request("en", attributes))

    assert "None" not in _text(draft)
    assert draft.body.count("\n\n") == 1  # intro and closing only (the greeting is added locally)
    assert draft.preheader


def test_offline_draft_never_evaluates_template_syntax_in_attribute_values() -> None:
    attributes = {**FULL_ATTRIBUTES, "interests": "{{ 7 * 7 }}", "last_purchase_category": "{% raw %}x"}
    draft = OfflineProvider().draft(_request("en", attributes))

    assert "49" not in _text(draft)
    assert "{%" not in _text(draft)
    assert "{{" not in _text(draft)  # no template syntax at all


def test_offline_provider_reports_zero_tokens_and_its_model() -> None:
    results = OfflineProvider().draft_many([_request("en", unit_id="a"), _request("pl", unit_id="b")])

    assert set(results) == {"a", "b"}
    for result in results.values():
        assert (result.model, result.input_tokens, result.output_tokens) == ("offline-templates-v1", 0, 0)
        assert result.vendor_request_id is None


def test_auto_selects_offline_templates_without_an_openai_key(policy: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    provider = build_provider(Settings(llm_provider="auto"), policy, vendor_allowed=True)

    assert provider.name == "offline"
    assert provider_description(provider) == ("offline templates (no OPENAI_API_KEY set; nothing sent to any vendor)")


def test_offline_setting_selects_offline_templates_even_with_an_openai_key(
    policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")

    provider = build_provider(Settings(llm_provider="offline"), policy, vendor_allowed=True)

    assert provider.name == "offline"
    assert "nothing sent to any vendor" in provider_description(provider)


def test_auto_selects_offline_templates_when_the_policy_does_not_allow_the_vendor(
    policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")

    provider = build_provider(Settings(llm_provider="auto"), policy, vendor_allowed=False)

    assert provider.name == "offline"
    assert "does not allow vendor openai" in provider_description(provider)
