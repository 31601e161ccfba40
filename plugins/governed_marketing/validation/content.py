"""The generated-content gate's input: one row per outbox message, with the draft's checks computed.

The vendor's text (subject, preheader, draft body) is judged on its own before any name is merged
(draft_* columns: template syntax, contact shapes, identifiers of any audience member, length), so a
draft is rejected only for what the vendor wrote. After merging, the recipient's own first name is in
the greeting by design, so the final message is checked for shapes (email, phone, URL, template
syntax) and the notice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from governed_marketing.policy import Policy
from governed_marketing.validation.gates import GateResult, run_gate
from governed_marketing.validation.patterns import EMAIL_LIKE, PHONE_LIKE, TEMPLATE_SYNTAX, url_outside_allow_list

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

MIN_NAME_CHARS = 4
_SLICE = 100_000  # bodies turned into Arrow text at a time
_WORD = re.compile(r"\w+", re.UNICODE)
_EMAIL = re.compile(EMAIL_LIKE)
_PHONE = re.compile(PHONE_LIKE)
_TEMPLATE = re.compile(TEMPLATE_SYNTAX)


@dataclass
class KnownIdentifiers:
    """Names, emails and phone numbers of a campaign's audience.

    A full name (first and last name of the same person, in either order), an email or a phone
    number always identifies. A single first or last name of at least four characters does too,
    unless it is also an ordinary word of the languages we write in ("Lange" in "Lange nicht
    gesehen"): `common_words` holds the vocabulary of our own templates and notices.
    """

    full_names: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)  # digits only, without 00 / + prefix
    common_words: frozenset[str] = field(default_factory=frozenset)

    def found_in(self, text: str) -> bool:
        """Whether the text names, or holds the email or phone number of, any audience member."""
        words = _WORD.findall(text)
        for size in range(1, 7):
            for start in range(len(words) - size + 1):
                phrase = " ".join(words[start : start + size])
                if phrase in self.full_names:
                    return True
                if phrase in self.names and phrase not in self.common_words:
                    return True
        if any(match.lower() in self.emails for match in _EMAIL.findall(text)):
            return True
        return any(_digits(match) in self.phones for match in _PHONE.findall(text))


def _digits(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return digits[2:] if digits.startswith("00") else digits


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    return []


def common_words() -> frozenset[str]:
    """Every word of our own offline templates, greetings and right-to-object notices, in every language."""
    from dataclasses import asdict

    from governed_marketing.generation.notices import LANGUAGES

    texts = [text for entry in LANGUAGES.values() for text in _strings(asdict(entry))]
    return frozenset(word for text in texts for word in _WORD.findall(text))


def audience_identifiers(conn: Warehouse, campaign_id: str) -> KnownIdentifiers:
    """The identifiers of every recipient of the campaign, read on our side only (never stored).

    Read as distinct values (a million recipients share about 180,000 name pairs): each value is
    worked out once, and the sets are the same as from every row.
    """
    recipients = """
        from marts.campaign_recipients r
        join raw.crm_contacts c using (contact_id)
        where r.campaign_id = ?
    """
    known = KnownIdentifiers(common_words=common_words())
    for first_name, last_name in conn.execute(
        f"select distinct c.first_name, c.last_name {recipients}", [campaign_id]
    ).fetchall():
        parts = [" ".join(_WORD.findall(name)) for name in (first_name, last_name) if name]
        parts = [part for part in parts if part]
        if len(parts) == 2:
            known.full_names.update({f"{parts[0]} {parts[1]}", f"{parts[1]} {parts[0]}"})
        for part in parts:
            candidates = {part, *part.split(" ")}
            known.names.update(n for n in candidates if len(n) >= MIN_NAME_CHARS)
    for (email,) in conn.execute(f"select distinct c.email_normalized {recipients}", [campaign_id]).fetchall():
        if email:
            known.emails.add(email.lower())
    for (phone,) in conn.execute(f"select distinct c.phone {recipients}", [campaign_id]).fetchall():
        if phone and len(_digits(phone)) >= 6:
            known.phones.add(_digits(phone))
    return known


def expected_languages(audience: pd.DataFrame, cohorts: pd.DataFrame, policy: Policy) -> pd.Series:
    """Each recipient's language, or the fallback where the recipient's cohort generalized it away.

    Args:
        audience: campaign_audience rows (recipient_pseudonym, cohort_id, language).
        cohorts: generation_cohorts rows (cohort_id, generalization_level).
    Returns:
        The expected language, indexed by recipient_pseudonym.
    """
    generalize = policy.cohorts.generalize
    dropped_at = generalize.index("language") + 1 if "language" in generalize else len(generalize) + 1
    level = audience["cohort_id"].map(cohorts.set_index("cohort_id")["generalization_level"])
    kept = level.notna() & (level < dropped_at) & audience["language"].notna()
    expected = audience["language"].where(kept, policy.cohorts.fallback_language)
    return pd.Series(expected.to_numpy(), index=audience["recipient_pseudonym"].to_numpy())


def final_messages(
    *,
    unit_id: pd.Series,
    cohort_id: pd.Series,
    language: Sequence[str | None],
    expected_language: Sequence[str | None] | np.ndarray,
    subject: pd.Series,
    bodies: Iterable[str],
    notice: Callable[[str | None], str],
) -> pd.DataFrame:
    """One row per message about to be written, indexed by the unit whose draft it carries.

    The bodies are read once, in slices, into Arrow text (a million Python strings are never held
    beside it); each is checked for its language's right-to-object notice on the way.
    """
    import pyarrow as pa

    chunks, has_notice, batch = [], [], []
    languages = iter(language)
    for body in bodies:
        has_notice.append(isinstance(body, str) and notice(next(languages)) in body)
        batch.append(body)
        if len(batch) == _SLICE:
            chunks.append(pa.array(batch, type=pa.large_string()))
            batch = []
    chunks.append(pa.array(batch, type=pa.large_string()))
    text = pd.StringDtype("pyarrow", na_value=np.nan)
    frame = pd.DataFrame(
        {
            "cohort_id": cohort_id.to_numpy(),
            "language": list(language),
            "expected_language": expected_language,
            "subject": subject.to_numpy(),
            "body": pd.array(pa.chunked_array(chunks, type=pa.large_string()), dtype=text),
            "has_objection_notice": has_notice,
        },
        index=pd.Index(unit_id.to_numpy(), name="unit_id"),
    )
    return frame


def content_frame(
    final: pd.DataFrame, drafts: pd.DataFrame, *, identifiers: KnownIdentifiers, policy: Policy
) -> pd.DataFrame:
    """The gate's input: the final messages (`final_messages`) with the draft-level checks, computed
    once per draft and joined on the unit whose draft each message carries.

    Args:
        drafts: one row per unit (index: unit id) with subject, preheader and body as drafted.
    """
    from expectations.generated_content import CONTENT_COLUMNS

    if final.empty:
        return pd.DataFrame(columns=CONTENT_COLUMNS)
    shapes = [re.compile(p) for p in (EMAIL_LIKE, PHONE_LIKE, url_outside_allow_list(policy.content.allowed_urls))]
    texts = [
        f"{s or ''}\n{p or ''}\n{b or ''}"
        for s, p, b in zip(drafts["subject"], drafts["preheader"], drafts["body"], strict=True)
    ]
    draft_checks = pd.DataFrame(
        {
            "draft_has_template_syntax": [bool(_TEMPLATE.search(text)) for text in texts],
            "draft_has_contact_shape": [any(shape.search(text) for shape in shapes) for text in texts],
            "draft_body_length": drafts["body"].map(lambda b: len(b or "")),
            "draft_has_known_identifier": [identifiers.found_in(text) for text in texts],
        },
        index=drafts.index,
    )
    return final.join(draft_checks)[CONTENT_COLUMNS]


def rejected_drafts(content: pd.DataFrame, policy: Policy) -> dict[str, str]:
    """Drafts (by unit) whose own text breaks a content rule: they are dropped and drafted again.

    The rules are the suite's (`CONTENT_RULES` with `judges_draft`), read on the draft_* columns
    computed before any name is merged: a recipient's name, a missing notice or a language mismatch
    is our own doing (or our data) and would not be fixed by asking the vendor again.
    """
    from expectations.generated_content import CONTENT_RULES

    rules = [rule for rule in CONTENT_RULES if rule.judges_draft]
    columns = [rule.column for rule in rules]
    # Every column a draft is judged on is the same for each message of the draft: one row per unit is enough.
    units = content.loc[~content.index.duplicated(), columns]
    reasons: dict[str, str] = {}
    for unit_id, row in zip(units.index, units.to_dict("records"), strict=True):
        problems = {rule.problem for rule in rules if rule.broken(row[rule.column], policy)}
        if problems:
            reasons[unit_id] = "; ".join(sorted(problems))
    return reasons


def content_gate(frame: pd.DataFrame, *, policy: Policy, campaign_id: str) -> GateResult:
    from expectations.generated_content import COMPUTED_COLUMNS, TEXT_COLUMNS, build_suite

    classes = {**TEXT_COLUMNS, **COMPUTED_COLUMNS}
    # GX samples failing rows' index values into its results: the unit ids (recipient pseudonyms in
    # individual mode) stay on our side, the gate sees row numbers.
    rows = frame.reset_index(drop=True)
    return run_gate("generated_content", campaign_id, lambda: build_suite(policy, campaign_id), rows, classes=classes)
