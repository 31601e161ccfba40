"""governance.yml loads, its helpers answer from it, and a malformed policy names the offending key.

Also the settings that guard the pseudonym key, and the pseudonym itself.
"""

from __future__ import annotations

import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from governed_marketing.policy import Policy, PolicyError, load_policy, parse_policy
from governed_marketing.pseudonym import PSEUDONYM_PATTERN, pseudonym
from governed_marketing.settings import Settings
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "governance.yml"
PURPOSE = "ai_personalized_email"


@pytest.fixture(scope="module")
def shipped() -> Policy:
    return load_policy(SHIPPED)


def shipped_raw() -> dict:
    return yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))


def the_campaign(raw: dict) -> str:
    return next(iter(raw["campaigns"]))


def parse_modified(tmp_path: Path, change: Callable[[dict], None], *, with_prompts: bool = True) -> Policy:
    """Parse the shipped policy after `change` edits its YAML, as if it were tmp_path/governance.yml."""
    raw = shipped_raw()
    change(raw)
    if with_prompts:
        shutil.copytree(REPO / "prompts", tmp_path / "prompts", dirs_exist_ok=True)
    path = tmp_path / "governance.yml"
    text = yaml.safe_dump(raw, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return parse_policy(text, path=path)


def policy_error(tmp_path: Path, change: Callable[[dict], None], *, with_prompts: bool = True) -> str:
    """The PolicyError message, with tmp_path masked (pytest names it after the test, keys and all)."""
    with pytest.raises(PolicyError) as caught:
        parse_modified(tmp_path, change, with_prompts=with_prompts)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "governance.yml")), "the message names the policy file"
    return message.replace(str(tmp_path), "<dir>")


# ---- the shipped policy ----------------------------------------------------------------------


def test_shipped_policy_loads(shipped):
    assert isinstance(shipped, Policy)
    assert shipped.source_path == SHIPPED.resolve()


def test_shipped_policy_round_trips_through_parse_unchanged(tmp_path, shipped):
    assert parse_modified(tmp_path, lambda raw: None).model_dump() == shipped.model_dump()


def test_ai_personalized_email_requires_email_marketing_and_ai_personalization(shipped):
    assert set(shipped.purposes[PURPOSE].requires_consent) == {"email_marketing", "ai_personalization"}


def test_shipped_policy_declares_at_least_one_campaign(shipped):
    assert shipped.campaign_ids()
    assert all(shipped.prompt_path(campaign_id).is_file() for campaign_id in shipped.campaign_ids())


def test_minimum_age_falls_back_to_the_default_for_unlisted_or_unknown_countries(shipped):
    default = shipped.minimum_age["default"]
    assert default == 16
    assert shipped.minimum_age_for("DE") == default
    assert shipped.minimum_age_for(None) == default
    assert shipped.minimum_age_for("") == default


def test_minimum_age_is_13_in_belgium_and_denmark_whatever_the_case(shipped):
    assert shipped.minimum_age_for("BE") == 13
    assert shipped.minimum_age_for("DK") == 13
    assert shipped.minimum_age_for("dk") == 13


def test_purpose_of_an_unknown_campaign_names_the_campaign(shipped):
    with pytest.raises(PolicyError, match="no_such_campaign"):
        shipped.purpose_of("no_such_campaign")


# ---- errors name the key ---------------------------------------------------------------------


def test_unknown_top_level_key_is_named(tmp_path):
    message = policy_error(tmp_path, lambda raw: raw.update(marketing_budget=1000))
    assert "marketing_budget" in message


def test_campaign_with_an_undeclared_purpose_names_campaigns_id_purpose(tmp_path):
    campaign = the_campaign(shipped_raw())

    def change(raw: dict) -> None:
        raw["campaigns"][campaign]["purpose"] = "cold_calling"

    message = policy_error(tmp_path, change)
    assert f"campaigns.{campaign}.purpose" in message
    assert "cold_calling" in message


def test_missing_consent_max_age_days_names_the_full_key(tmp_path):
    message = policy_error(tmp_path, lambda raw: raw["purposes"][PURPOSE].pop("consent_max_age_days"))
    assert f"purposes.{PURPOSE}.consent_max_age_days" in message


def test_negative_cohort_k_names_cohorts_k(tmp_path):
    message = policy_error(tmp_path, lambda raw: raw["cohorts"].update(k=-5))
    assert "cohorts.k" in message


def test_invalid_retention_period_names_retention_and_the_store(tmp_path):
    message = policy_error(tmp_path, lambda raw: raw["retention"].update(raw_crm="forever"))
    assert "retention: raw_crm" in message


def test_invalid_run_reports_rule_names_the_key(tmp_path):
    message = policy_error(tmp_path, lambda raw: raw["run_reports"].update(max_age="a while"))
    assert "run_reports.max_age" in message
    message = policy_error(tmp_path, lambda raw: raw["run_reports"].update(keep_last=0))
    assert "run_reports.keep_last" in message


def test_minimum_age_without_default_names_minimum_age(tmp_path):
    message = policy_error(tmp_path, lambda raw: raw["minimum_age"].pop("default"))
    assert "minimum_age: needs a 'default' entry" in message


def test_required_dpia_without_reference_names_the_purpose_and_dpia_reference(tmp_path):
    message = policy_error(tmp_path, lambda raw: raw["purposes"][PURPOSE]["dpia"].pop("reference"))
    assert f"purposes.{PURPOSE}" in message
    assert "dpia.reference" in message


def test_consent_lawful_basis_without_required_consents_names_requires_consent(tmp_path):
    message = policy_error(tmp_path, lambda raw: raw["purposes"][PURPOSE].update(requires_consent=[]))
    assert f"purposes.{PURPOSE}" in message
    assert "requires_consent" in message


def test_missing_prompt_file_names_campaigns_id_prompt(tmp_path):
    campaign = the_campaign(shipped_raw())
    message = policy_error(tmp_path, lambda raw: None, with_prompts=False)
    assert f"campaigns.{campaign}.prompt" in message


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "governance.yml"
    with pytest.raises(PolicyError) as caught:
        parse_policy("purposes: [unclosed\n  campaigns: {", path=path)
    assert str(path) in str(caught.value)


def test_vendor_referenced_by_a_purpose_but_not_declared_names_purpose_vendors(tmp_path):
    message = policy_error(tmp_path, lambda raw: raw["vendors"].clear())
    assert f"purposes.{PURPOSE}.vendors" in message
    assert "openai" in message


def test_missing_policy_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "governance.yml"
    with pytest.raises(PolicyError) as caught:
        load_policy(missing)
    assert str(missing) in str(caught.value)


# ---- settings and pseudonyms -----------------------------------------------------------------


def test_production_without_pseudonym_key_refuses_naming_gmp_pseudonym_key(tmp_path):
    settings = Settings(env="production", pseudonym_key=None, home=tmp_path)
    with pytest.raises(RuntimeError, match="GMP_PSEUDONYM_KEY"):
        settings.resolve_pseudonym_key()


def test_production_uses_the_configured_pseudonym_key(tmp_path):
    settings = Settings(env="production", pseudonym_key=SecretStr("k" * 32), home=tmp_path)
    key, source = settings.resolve_pseudonym_key()
    assert key == b"k" * 32
    assert source == "GMP_PSEUDONYM_KEY"
    assert not (tmp_path / "pseudonym.key").exists()


def test_demo_creates_a_private_key_file_under_home(tmp_path):
    home = tmp_path / "home"
    key, source = Settings(env="demo", pseudonym_key=None, home=home).resolve_pseudonym_key()
    key_file = home / "pseudonym.key"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip().encode() == key
    assert str(key_file) in source


def test_demo_returns_the_same_key_on_a_second_call(tmp_path):
    first, _ = Settings(env="demo", pseudonym_key=None, home=tmp_path).resolve_pseudonym_key()
    second, _ = Settings(env="demo", pseudonym_key=None, home=tmp_path).resolve_pseudonym_key()
    assert first == second
    assert len(first) >= 32


def test_pseudonym_is_stable_for_the_same_key_and_email():
    assert pseudonym(b"key-one", "ann@example.com") == pseudonym(b"key-one", "ann@example.com")


def test_pseudonym_differs_across_keys():
    assert pseudonym(b"key-one", "ann@example.com") != pseudonym(b"key-two", "ann@example.com")


def test_pseudonym_is_64_lowercase_hex_chars():
    value = pseudonym(b"key-one", "ann@example.com")
    assert len(value) == 64
    assert re.fullmatch(PSEUDONYM_PATTERN, value)


# ---- direct identifiers and CRM freshness (issue 13) ------------------------------------------


@pytest.mark.parametrize("field", ["email", "Email ", "phone", "first_name", "contact_id"])
def test_a_direct_identifier_in_a_purpose_fields_names_the_purpose_and_the_field(tmp_path, field):
    message = policy_error(tmp_path, lambda raw: raw["purposes"][PURPOSE]["fields"].append(field))
    assert f"purposes.{PURPOSE}.fields: {field!r} is a direct identifier" in message


def test_policy_check_refuses_email_in_a_purpose(tmp_path):
    """`gmp policy check` on a policy that allow-lists email: exit 1, the purpose and field named."""
    from governed_marketing.cli import app
    from typer.testing import CliRunner

    parse_error = policy_error(tmp_path, lambda raw: raw["purposes"][PURPOSE]["fields"].append("email"))
    assert parse_error  # the file tmp_path/governance.yml now holds the refused policy
    result = CliRunner().invoke(app, ["policy", "check", str(tmp_path / "governance.yml")])
    assert result.exit_code != 0
    assert f"purposes.{PURPOSE}.fields: 'email' is a direct identifier" in " ".join(result.output.split())


def test_freshness_error_threshold_below_the_warning_names_ingest_freshness(tmp_path):
    def change(raw: dict) -> None:
        raw["ingest"]["freshness"] = {"warn_after_hours": 48, "error_after_hours": 24}

    message = policy_error(tmp_path, change)
    assert "ingest.freshness" in message and "error_after_hours must be at least warn_after_hours" in message


def test_freshness_is_optional(tmp_path):
    assert parse_modified(tmp_path, lambda raw: raw["ingest"].pop("freshness")).ingest.freshness is None


def test_the_hubspot_source_needs_its_mapping_and_names_the_key(tmp_path):
    def hubspot_without_mapping(raw: dict) -> None:
        raw["ingest"]["source"] = "hubspot"
        del raw["hubspot"]

    assert "ingest.source: hubspot needs the hubspot block" in policy_error(tmp_path, hubspot_without_mapping)

    def unknown_consent(raw: dict) -> None:
        raw["hubspot"]["subscription_types"]["999"] = "newsletter_typo"

    assert "hubspot.subscription_types.999" in policy_error(tmp_path, unknown_consent)

    def not_a_column(raw: dict) -> None:
        raw["hubspot"]["properties"]["hs_secret"] = "ssn"

    assert "hs_secret" in policy_error(tmp_path, not_a_column)


def test_the_csv_drop_stays_the_default_source(shipped):
    assert shipped.ingest.source == "csv" and shipped.hubspot is not None
