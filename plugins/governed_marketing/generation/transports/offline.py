"""The offline transport: deterministic drafts from our own templates; nothing leaves the machine.

The phrases come from the one language table (generation/notices.py), so every language a
recipient can have is drafted in, greeted in and carries the notice. Attribute values only ever
arrive as variables of a sandboxed template, cleaned to letters, spaces, hyphens and apostrophes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from governed_marketing.generation.base import (
    Draft,
    DraftRequest,
    DraftResult,
    FailureCallback,
    ResultCallback,
    SubmitCallback,
)
from governed_marketing.generation.notices import LANGUAGES, texts_for
from governed_marketing.generation.request import check_unique

log = logging.getLogger(__name__)

OFFLINE_MODEL = "offline-templates-v1"
#: Units handed over (marked submitted) at once: drafting is local, so one ledger write per chunk.
SUBMIT_CHUNK = 1000
#: The languages the templates draft in: every language of the one table.
OFFLINE_LANGUAGES: tuple[str, ...] = tuple(sorted(LANGUAGES))

_DISALLOWED = re.compile(r"[^\w\s'-]|[\d_]")
_SPACES = re.compile(r"\s+")
_LIST_SEPARATORS = re.compile(r"[,;|/]")
_MAX_VALUE_CHARS = 40


def _clean(value: object) -> str | None:
    """Attribute text safe to drop into a plain-text draft (and unchanged by HTML escaping).

    Keeps letters, spaces, hyphens and apostrophes only, so no URL, email address, phone number,
    markup or template syntax can come through an attribute value.
    """
    if value is None:
        return None
    text = _SPACES.sub(" ", _DISALLOWED.sub(" ", str(value))).strip(" -'")
    if len(text) > _MAX_VALUE_CHARS:
        text = text[:_MAX_VALUE_CHARS].rsplit(" ", 1)[0]
    return text or None


def _clean_list(value: object, *, limit: int = 3) -> list[str]:
    if value is None:
        return []
    items = [_clean(part) for part in _LIST_SEPARATORS.split(str(value))]
    unique: list[str] = []
    for item in items:
        if item and item.lower() not in (u.lower() for u in unique):
            unique.append(item)
    return unique[:limit]


# Phrases per language. They are our own template source; attribute values only ever arrive as
# variables, so a value can never be evaluated as a template. The greeting is not here: it is composed

_BODY = """\
{{ intro }}
{%- if interests_line %}

{{ interests_line }}
{%- endif %}
{%- if purchase_line %}

{{ purchase_line }}
{%- endif %}
{%- if country_line %}

{{ country_line }}
{%- endif %}

{{ closing }}"""


class OfflineProvider:
    """Deterministic drafts from templates in every language of the greeting table; nothing leaves the machine.

    The same request always yields the same draft, which makes the demo and the tests repeatable.
    """

    name = "offline"
    model = OFFLINE_MODEL

    def __init__(self, reason: str = "GMP_LLM_PROVIDER=offline") -> None:
        self.reason = reason
        self._env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=False)
        self._body = self._env.from_string(_BODY)
        self._compiled: dict[str, Any] = {}

    def _phrase(self, source: str, **values: object) -> str:
        template = self._compiled.get(source)
        if template is None:
            template = self._compiled[source] = self._env.from_string(source)
        return template.render(**values)

    def draft(self, request: DraftRequest) -> Draft:
        phrases = texts_for((request.language or "").strip().lower()[:2]).offline
        attrs = request.attributes
        stage_raw = _clean(attrs.get("lifecycle_stage"))
        stage = stage_raw.lower() if stage_raw and stage_raw.lower() in phrases.subject else "default"
        # Cohort cells carry one shared `interest`; individual requests may carry the `interests` list.
        interests_list = _clean_list(attrs.get("interest") or attrs.get("interests"))
        interests = (
            f" {phrases.conjunction} ".join([", ".join(interests_list[:-1]), interests_list[-1]])
            if len(interests_list) > 1
            else "".join(interests_list)
        )
        category = _clean(attrs.get("last_purchase_category"))
        country = _clean(attrs.get("country"))
        if country and len(country) == 2:
            country = country.upper()

        subject = phrases.subject[stage]
        preheader = self._phrase(phrases.preheader, interests=interests) if interests else phrases.preheader_default
        body = self._body.render(
            intro=phrases.intro[stage],
            interests_line=self._phrase(phrases.interests, interests=interests) if interests else "",
            purchase_line=self._phrase(phrases.purchase, category=category) if category else "",
            country_line=self._phrase(phrases.country, country=country) if country else "",
            closing=phrases.closing,
        )
        return Draft(subject=subject, preheader=preheader, body=body)

    def draft_many(
        self,
        requests: list[DraftRequest],
        *,
        on_result: ResultCallback | None = None,
        on_failure: FailureCallback | None = None,
        on_submit: SubmitCallback | None = None,
    ) -> dict[str, DraftResult]:
        check_unique(requests)
        results: dict[str, DraftResult] = {}
        for start in range(0, len(requests), SUBMIT_CHUNK):
            chunk = requests[start : start + SUBMIT_CHUNK]
            if on_submit is not None:  # each request is its own group; nothing is sent, nothing is paid
                on_submit([[request] for request in chunk])
            for request in chunk:
                result = DraftResult(draft=self.draft(request), model=self.model)
                results[request.unit_id] = result
                if on_result is not None:
                    on_result(request, result)
        log.info("drafted %d units with offline templates", len(results))
        return results
