"""The one language table: every language a recipient can have greets and carries the notice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from governed_marketing.generation.notices import (
    FALLBACK_LANGUAGE,
    LANGUAGES,
    first_name_for_greeting,
    greeting,
    objection_notice,
)
from governed_marketing.generation.transports.offline import OFFLINE_LANGUAGES
from governed_marketing.policy import load_policy
from governed_marketing.sample_data.crm_export import _COUNTRIES

REPO = Path(__file__).resolve().parents[3]
GENERATED = sorted({language for locales, *_ in _COUNTRIES.values() for _, language in locales})
POLICY = load_policy(REPO / "governance.yml")
#: Every language a message can be written in: the sample generator's, and the policy's own.
REACHABLE = sorted({*GENERATED, POLICY.content.default_language, POLICY.cohorts.fallback_language})
MISSING_NAMES = [None, "", "   ", "\x00", "<script>alert(1)</script>", "{{ 7*7 }}", "anna@example.com", "x" * 80]


def test_every_reachable_language_has_every_entry() -> None:
    assert set(REACHABLE) <= set(LANGUAGES), sorted(set(REACHABLE) - set(LANGUAGES))
    for code in REACHABLE:
        texts = LANGUAGES[code]
        assert texts.greeting.count("{name}") == 1, code
        assert texts.greeting_without_name.strip() and "{" not in texts.greeting_without_name, code
        assert "{controller}" in texts.objection_notice and "{url}" in texts.objection_notice, code


def test_the_offline_templates_cover_the_same_languages() -> None:
    assert set(OFFLINE_LANGUAGES) == set(LANGUAGES)


@pytest.mark.parametrize("language", sorted(LANGUAGES))
@pytest.mark.parametrize("name", MISSING_NAMES, ids=repr)
def test_a_missing_or_unusable_name_greets_without_a_dangling_comma(language: str, name: object) -> None:
    line = greeting(language, name)

    assert line == LANGUAGES[language].greeting_without_name
    assert not re.search(r"\s[,:]|\s$|^\s", line), line  # never "Cześć ," nor "Hi  ,"


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_a_name_greets_by_name(language: str) -> None:
    assert greeting(language, " Łukasz ") == LANGUAGES[language].greeting.format(name="Łukasz")


def test_names_are_kept_as_written_only_when_they_read_as_names() -> None:
    for name in ("Zoë", "Jean-Luc", "O'Brien", "Ó Briain", "芳", "Ольга", "J. R."):
        assert first_name_for_greeting(name) == name
    assert first_name_for_greeting("Ca\x00leb") == "Caleb"  # control characters are removed
    assert first_name_for_greeting("Anna\u202e") == "Anna"  # so are bidi overrides
    for bad in ("<b>Anna</b>", "Anna & Bob", "Robert'); drop table", "Anna1", "http://x.test", "www.evil.test", "A--B"):
        assert first_name_for_greeting(bad) is None, bad


def test_a_language_outside_the_table_falls_back_to_english() -> None:
    assert greeting("ja", "Aiko") == LANGUAGES[FALLBACK_LANGUAGE].greeting.format(name="Aiko")
    assert objection_notice("ja", controller="C", url="U") == objection_notice("en", controller="C", url="U")
