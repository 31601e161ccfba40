"""Which content provider drafts: offline templates or OpenAI, picked from settings and the policy.

The transports themselves live in generation/transports/ (offline, sync, batch); what they send, in
generation/request.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from governed_marketing.generation.base import ContentProvider
from governed_marketing.generation.errors import ProviderError
from governed_marketing.generation.request import body_options
from governed_marketing.generation.transports.offline import OfflineProvider
from governed_marketing.generation.transports.sync import OpenAIProvider
from governed_marketing.generation.vendor import openai_client
from governed_marketing.settings import openai_key_present

if TYPE_CHECKING:
    from governed_marketing.policy import Policy
    from governed_marketing.settings import Settings


def build_provider(settings: Settings, policy: Policy, vendor_allowed: bool) -> ContentProvider:
    """Pick the provider from GMP_LLM_PROVIDER, the presence of OPENAI_API_KEY and the policy.

    Args:
        settings: where GMP_LLM_PROVIDER, GMP_LLM_MODEL, GMP_LLM_MODE and GMP_LLM_CONCURRENCY come from.
        policy: the loaded governance.yml (the body length limit is passed on to the model).
        vendor_allowed: whether governance.yml allows the 'openai' vendor for this campaign's purpose.
            'auto' falls back to offline templates when it does not; 'openai' refuses to run.
    """
    choice = settings.llm_provider
    key_present = openai_key_present()
    if choice == "offline":
        return OfflineProvider(reason="GMP_LLM_PROVIDER=offline")
    if choice == "auto" and not key_present:
        return OfflineProvider(reason="no OPENAI_API_KEY set")
    if choice == "auto" and not vendor_allowed:
        return OfflineProvider(reason="governance.yml does not allow vendor openai for this purpose")
    if not key_present:
        raise ProviderError(
            "GMP_LLM_PROVIDER=openai but OPENAI_API_KEY is not set; set it, or use GMP_LLM_PROVIDER=offline"
        )
    if not vendor_allowed:
        raise ProviderError(
            "GMP_LLM_PROVIDER=openai but governance.yml does not allow vendor 'openai' for this purpose "
            "(purposes.<purpose>.vendors); nothing was sent"
        )

    vendor = policy.vendors.get("openai")
    return OpenAIProvider(
        openai_client(),
        settings.llm_model,
        settings.llm_concurrency,
        **body_options(policy, "openai"),
        requests_per_minute=vendor.limits.requests_per_minute if vendor else None,
        tokens_per_minute=vendor.limits.tokens_per_minute if vendor else None,
    )


def provider_description(provider: ContentProvider) -> str:
    """One line for logs and the report: which provider, and where content goes (if anywhere)."""
    if isinstance(provider, OfflineProvider):
        return f"offline templates ({provider.reason}; nothing sent to any vendor)"
    if isinstance(provider, OpenAIProvider):
        url = provider.client.base_url
        where = f"{url.host}:{url.port}" if url.port else url.host
        return f"openai model {provider.model} at {where}"
    return f"{provider.name} model {provider.model}"
