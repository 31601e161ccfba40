"""The generated-content gate: merged messages pass; each expectation fails on its violation."""

from __future__ import annotations

import pandas as pd
import pytest
from governed_marketing.generation.notices import greeting, objection_notice
from governed_marketing.validation.content import (
    KnownIdentifiers,
    common_words,
    content_frame,
    content_gate,
    expected_languages,
    final_messages,
    rejected_drafts,
)

from tests.unit.validation.conftest import CAMPAIGN, covered, failed, stored

DRAFT = {
    "subject": "New arrivals we think you will like",
    "preheader": "Ideas around garden",
    "body": "Thank you for shopping with us. Since you enjoy garden, we picked a few ideas.",
}
DRAFT_DE = {
    "subject": "Lange nicht gesehen - das ist neu",
    "preheader": "Ideen rund um Garten",
    "body": "wir haben Sie vermisst. Viele Grüße\nIhr Shop-Team",
}
PEOPLE = [("p1", "Annabel", "en"), ("p2", "Jörg", "de"), ("p3", "", "de")]
IDENTIFIERS = KnownIdentifiers(
    full_names={"Annabel Quist", "Quist Annabel", "Jörg Lange", "Lange Jörg"},
    names={"Annabel", "Quist", "Lange"},
    emails={"annabel.quist@example-crm.test"},
    phones={"4955501234567"},
    common_words=common_words(),
)


def messages(en: dict | None = None, de: dict | None = None) -> pd.DataFrame:
    drafts = {"en": en or DRAFT, "de": de or DRAFT_DE}
    return pd.DataFrame(
        [
            {"recipient_pseudonym": p, "first_name": name, "language": lang, "cohort_id": f"cohort-{lang}",
             **drafts[lang]}
            for p, name, lang in PEOPLE
        ]
    )  # fmt: skip


def rows(frame: pd.DataFrame, policy, *, notice: bool = True) -> list[dict]:
    """The outbox rows as run_campaign builds them: the greeting composed, the notice appended."""
    out = []
    for m in frame.itertuples(index=False):
        body = f"{greeting(m.language, m.first_name)}\n\n{m.body}".rstrip()
        if notice:
            body += "\n\n--\n" + objection_notice(
                m.language, controller=policy.controller.name, url=policy.content.unsubscribe_url
            )
        out.append({"cohort_id": m.cohort_id, "language": m.language, "subject": m.subject, "body": body})
    return out


def expected(policy) -> pd.Series:
    audience = pd.DataFrame(
        {"recipient_pseudonym": [p for p, _, _ in PEOPLE], "cohort_id": ["cohort-en", "cohort-de", "cohort-de"],
         "language": [lang for _, _, lang in PEOPLE]}
    )  # fmt: skip
    cohorts = pd.DataFrame({"cohort_id": ["cohort-en", "cohort-de"], "generalization_level": [0, 1]})
    return expected_languages(audience, cohorts, policy)


def gate_input(frame: pd.DataFrame, built: list[dict], policy) -> pd.DataFrame:
    """The gate's frame as publish builds it: the final messages, the drafts' checks joined by unit."""
    final = final_messages(
        unit_id=frame["cohort_id"],
        cohort_id=pd.Series([row["cohort_id"] for row in built], dtype=object),
        language=[row["language"] for row in built],
        expected_language=frame["recipient_pseudonym"].map(expected(policy)).to_numpy(),
        subject=pd.Series([row["subject"] for row in built], dtype=object),
        bodies=(row["body"] for row in built),
        notice=lambda language: objection_notice(
            language, controller=policy.controller.name, url=policy.content.unsubscribe_url
        ),
    )
    drafts = frame.drop_duplicates("cohort_id").set_index("cohort_id")[["subject", "preheader", "body"]]
    return content_frame(final, drafts, identifiers=IDENTIFIERS, policy=policy)


def check(policy, frame: pd.DataFrame | None = None, built: list[dict] | None = None, **overrides):
    frame = messages() if frame is None else frame
    built = rows(frame, policy) if built is None else built
    table = gate_input(frame, built, policy)
    table = table.assign(**overrides) if overrides else table
    return content_gate(table, policy=policy, campaign_id=CAMPAIGN)


def _final(policy, index: int, **changes) -> list[dict]:
    built = rows(messages(), policy)
    built[index] = {**built[index], **changes}
    return built


def _draft(**changes) -> pd.DataFrame:
    return messages(en={**DRAFT, **changes})


VIOLATIONS = {
    ("expect_table_columns_to_match_set", None): lambda p: check(p, email=["x"] * 3),
    ("expect_column_values_to_not_be_null", "subject"): lambda p: check(p, built=_final(p, 0, subject=None)),
    ("expect_column_values_to_not_be_null", "body"): lambda p: check(p, built=_final(p, 0, body=None)),
    ("expect_column_values_to_not_match_regex_list", "subject"): lambda p: check(
        p, _draft(subject="Write to annabel.quist@example-crm.test")
    ),
    ("expect_column_values_to_not_match_regex_list", "body"): lambda p: check(
        p, _draft(body=DRAFT["body"] + " Call +49 5550 123 4567.")
    ),
    ("expect_column_values_to_not_match_regex", "subject"): lambda p: check(p, _draft(subject="Deals at https://shop.test")),
    ("expect_column_values_to_not_match_regex", "body"): lambda p: check(p, _draft(body=DRAFT["body"] + " www.x.test")),
    ("expect_column_value_lengths_to_be_between", "subject"): lambda p: check(p, _draft(subject="x" * 201)),
    ("expect_column_values_to_be_in_set", "draft_has_known_identifier"): lambda p: check(
        p, _draft(body=DRAFT["body"] + " Greetings from Annabel Quist.")
    ),
    ("expect_column_values_to_be_in_set", "has_objection_notice"): lambda p: check(
        p, built=rows(messages(), p, notice=False)
    ),
    ("expect_column_values_to_be_in_set", "draft_has_template_syntax"): lambda p: check(
        p, _draft(body="Hi {{ first_name }}, a greeting the shop adds itself.")
    ),
    ("expect_column_values_to_be_in_set", "draft_has_contact_shape"): lambda p: check(
        p, _draft(preheader="Our sale at https://shop.test")
    ),
    ("expect_column_values_to_be_between", "draft_body_length"): lambda p: check(
        p, _draft(body=DRAFT["body"] + " more" * p.content.max_body_chars)
    ),
    ("expect_column_values_to_match_regex", "language"): lambda p: check(p, built=_final(p, 0, language="english")),
    ("expect_column_pair_values_to_be_equal", "language,expected_language"): lambda p: check(
        p, built=_final(p, 1, language="en")
    ),
}  # fmt: skip
#: A violation may break more than one rule (a leftover placeholder is also template syntax).
ALSO = {("expect_column_values_to_not_match_regex", "subject"), ("expect_column_values_to_not_match_regex", "body")}


def test_merged_messages_with_the_notice_pass(policy):
    result = check(policy)
    assert result.success, result.one_line()


def test_every_expectation_has_a_seeded_violation(policy):
    assert covered(check(policy)) == set(VIOLATIONS) | ALSO


@pytest.mark.parametrize("expectation", list(VIOLATIONS), ids=lambda e: f"{e[0]}[{e[1]}]")
def test_each_seeded_violation_fails_its_expectation_and_stores_no_value(policy, expectation):
    result = VIOLATIONS[expectation](policy)
    assert expectation in failed(result), result.one_line()
    text = stored(result)
    for value in ("annabel.quist", "+49 5550 123 4567", "Annabel", "shop.test", "www.x.test", "Jörg"):
        assert value not in text


def test_a_placeholder_left_in_the_final_message_fails(policy):
    built = _final(policy, 0, body="Hi {{ first_name }}, hello")
    result = check(policy, built=built)
    assert ("expect_column_values_to_not_match_regex", "body") in failed(result)


def test_a_surname_that_is_an_ordinary_word_of_our_templates_is_not_an_identifier(policy):
    """'Lange' is a contact's surname and the German for 'a long time': alone it identifies nobody."""
    assert "Lange" in DRAFT_DE["subject"]
    assert check(policy).success
    assert IDENTIFIERS.found_in("Lange Jörg was here")  # the full name does


def test_a_draft_is_judged_on_its_own_text_not_on_a_recipients_merged_name(policy):
    """Old merge: a name with template or URL syntax lands in the body. The draft columns stay clean."""
    frame = messages()
    frame.loc[0, "first_name"] = "{{ x }} www.evil.test"
    built = rows(frame, policy)
    built[0]["body"] = built[0]["body"].replace("Hi there,", "Hi {{ x }} www.evil.test,")
    table = gate_input(frame, built, policy)

    assert not table["draft_has_template_syntax"].any() and not table["draft_has_contact_shape"].any()
    assert not content_gate(table, policy=policy, campaign_id=CAMPAIGN).success  # the message is still stopped


def test_the_recipients_own_first_name_in_the_greeting_is_expected(policy):
    assert "Annabel" in rows(messages(), policy)[0]["body"]
    assert check(policy).success


def test_a_recipient_whose_cohort_dropped_the_language_expects_the_fallback(policy):
    audience = pd.DataFrame({"recipient_pseudonym": ["p9"], "cohort_id": ["c-last"], "language": ["pt"]})
    cohorts = pd.DataFrame({"cohort_id": ["c-last"], "generalization_level": [len(policy.cohorts.generalize)]})
    assert expected_languages(audience, cohorts, policy).to_dict() == {"p9": policy.cohorts.fallback_language}


def test_no_messages_pass(policy):
    empty = messages().iloc[0:0]
    assert check(policy, empty, built=[]).success


#: One draft-only violation per rule that judges drafts, all in the English draft at once (one gate run).
DRAFT_VIOLATIONS = {
    "subject": {"subject": "x" * 201},
    "draft_has_known_identifier": {"body": "Greetings from Annabel Quist."},
    "draft_has_template_syntax": {"body": "Hi {{ first_name }}, a greeting the shop adds itself."},
    "draft_has_contact_shape": {"preheader": "Our sale at https://shop.test"},
    "draft_body_length": {"body": " more" * 2000},
}


def _table(policy, frame: pd.DataFrame, built: list[dict] | None = None) -> pd.DataFrame:
    built = rows(frame, policy) if built is None else built
    return gate_input(frame, built, policy)


def test_the_suite_and_the_per_draft_verdict_read_the_same_rules(policy):
    from expectations.generated_content import CONTENT_RULES

    draft = {**DRAFT, **{k: v for change in DRAFT_VIOLATIONS.values() for k, v in change.items() if k != "body"}}
    draft["body"] = " ".join(change["body"] for change in DRAFT_VIOLATIONS.values() if "body" in change)
    table = _table(policy, messages(en=draft))
    judging = [rule for rule in CONTENT_RULES if rule.judges_draft]
    assert {rule.column for rule in judging} == set(DRAFT_VIOLATIONS)

    result = content_gate(table, policy=policy, campaign_id=CAMPAIGN)
    failed_columns = {column for _, column in failed(result)}
    verdict = rejected_drafts(table, policy)

    assert set(verdict) == {"cohort-en"}  # only the broken draft, never the German one
    for rule in judging:
        assert rule.column in failed_columns, rule.column
        assert rule.problem in verdict["cohort-en"].split("; "), rule.problem


def test_a_merged_message_problem_rejects_no_draft(policy):
    table = _table(policy, messages(), rows(messages(), policy, notice=False))

    assert not content_gate(table, policy=policy, campaign_id=CAMPAIGN).success
    assert rejected_drafts(table, policy) == {}


def test_the_gates_results_name_no_unit(policy):
    """The frame is indexed by unit (a recipient's pseudonym in individual mode); GX samples failing
    rows' index values into its results, so the gate must see row numbers, never the units."""
    import json

    draft = {**DRAFT, "body": "Call +49 30 1234 5678 now, Annabel Quist."}
    table = _table(policy, messages(en=draft))
    assert set(table.index) == {"cohort-en", "cohort-de"}

    result = content_gate(table, policy=policy, campaign_id=CAMPAIGN)

    assert not result.success
    stored = json.dumps(result.__dict__, default=str)
    assert "cohort-en" not in stored and "cohort-de" not in stored
