"""run_gate: result formats chosen by column class, fail-closed verdicts, nothing personal stored."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
import pytest
from governed_marketing.validation import GateFailed, GateResult, run_gate
from governed_marketing.validation.docs import build_data_docs
from governed_marketing.validation.gates import reads_personal_data

from tests.unit.validation.conftest import failed, stored

SECRET_EMAILS = ["ann.secret@example-crm.test", "bob.secret@example-crm.test"]


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "email": ["ok@example.com", SECRET_EMAILS[0], SECRET_EMAILS[1]],
            "loyalty_points": [120, 35, 987654],
            "stage": ["lead", "vip", "lead"],
        }
    )


def suite() -> gx.ExpectationSuite:
    built = gx.ExpectationSuite(name="test_gate.subject")
    built.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="email", regex=r"^ok@"))
    built.add_expectation(gxe.ExpectColumnMaxToBeBetween(column="loyalty_points", max_value=1000))
    built.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="stage", value_set=["lead"]))
    built.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=["email", "loyalty_points", "stage"]))
    return built


CLASSES = {"email": "direct", "loyalty_points": "quasi", "stage": "none"}


def test_failing_values_of_direct_and_quasi_columns_are_never_stored():
    result = run_gate("test_gate", "subject", suite, frame(), classes=CLASSES)
    assert not result.success
    text = stored(result)
    assert not any(email in text for email in SECRET_EMAILS)
    assert "987654" not in text  # the observed maximum of a quasi column


def test_failing_values_of_a_none_column_are_sampled_for_the_reviewer():
    result = run_gate("test_gate", "subject", suite, frame(), classes=CLASSES)
    (stage,) = [r for r in result.validation["results"] if r["expectation_config"]["kwargs"].get("column") == "stage"]
    assert stage["result"]["partial_unexpected_list"] == ["vip"]


def test_an_unclassified_column_counts_as_personal():
    result = run_gate("test_gate", "subject", suite, frame(), classes={"stage": "none"})
    assert not any(email in stored(result) for email in SECRET_EMAILS)
    assert "987654" not in stored(result)


def test_without_a_classification_every_column_is_counts_only():
    result = run_gate("test_gate", "subject", suite, frame())
    assert "vip" not in stored(result)
    assert {o.result_format for o in result.outcomes if o.column} == {"counts only"}


def test_counts_survive_the_scrub_and_name_the_failures():
    result = run_gate("test_gate", "subject", suite, frame(), classes=CLASSES)
    assert failed(result) == {
        ("expect_column_values_to_match_regex", "email"),
        ("expect_column_max_to_be_between", "loyalty_points"),
        ("expect_column_values_to_be_in_set", "stage"),
    }
    counts = {o.column: o.unexpected_count for o in result.outcomes}
    assert counts["email"] == 2 and counts["stage"] == 1
    assert "test_gate gate failed for subject: 3 of 4 expectations failed on 3 rows" in result.one_line()


def test_outcomes_keep_the_suite_order_across_result_formats():
    result = run_gate("test_gate", "subject", suite, frame(), classes=CLASSES)
    assert [o.column for o in result.outcomes] == ["email", "loyalty_points", "stage", None]


def test_a_table_shape_expectation_keeps_its_column_names():
    result = run_gate("test_gate", "subject", suite, frame(), classes=CLASSES)
    table = result.validation["results"][-1]
    assert sorted(table["result"]["observed_value"]) == ["email", "loyalty_points", "stage"]


def test_a_passing_gate_and_the_json_round_trip():
    clean = frame().iloc[[0]].assign(stage="lead", loyalty_points=120)
    result = run_gate("test_gate", "subject", suite, clean, classes=CLASSES)
    assert result.success
    assert GateResult.from_json(result.to_json()) == result


def test_gate_failed_carries_the_one_line_reason():
    result = run_gate("test_gate", "subject", suite, frame(), classes=CLASSES)
    with pytest.raises(GateFailed, match="test_gate gate failed for subject"):
        raise GateFailed(result)


@pytest.mark.parametrize(
    ("expectation", "kwargs", "personal"),
    [
        ("expect_column_values_to_be_in_set", {"column": "stage"}, False),
        ("expect_column_values_to_be_in_set", {"column": "email"}, True),
        ("expect_column_pair_values_to_be_equal", {"column_A": "stage", "column_B": "email"}, True),
        ("expect_table_columns_to_match_set", {"column_set": ["email"]}, False),
        ("unexpected_rows_expectation", {"unexpected_rows_query": "select *"}, True),
    ],
)
def test_which_expectations_run_counts_only(expectation, kwargs, personal):
    assert reads_personal_data(expectation, kwargs, CLASSES) is personal


def test_data_docs_show_the_gate_with_rules_and_counts_but_no_personal_value(tmp_path):
    result = run_gate("test_gate", "subject", suite, frame(), classes=CLASSES)
    pages = build_data_docs([("run-1", result)], tmp_path / "data_docs")
    page = tmp_path / pages[("test_gate", "subject")]
    assert page.is_file()
    html = " ".join(p.read_text(encoding="utf-8") for p in (tmp_path / "data_docs").rglob("*.html"))
    assert "test_gate" in html and "vip" in html
    assert not any(email in html for email in SECRET_EMAILS)
    assert "987654" not in html


def test_data_docs_are_rebuilt_from_scratch(tmp_path):
    stale = tmp_path / "data_docs" / "validations" / "old" / "page.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("an older page")
    build_data_docs([], tmp_path / "data_docs")
    assert not stale.exists()
    assert (tmp_path / "data_docs" / "index.html").is_file()


def test_a_none_column_holding_an_identifier_after_all_is_not_sampled():
    """An email typed into a non-personal column: the rule that catches it keeps counts only."""

    def language_suite() -> gx.ExpectationSuite:
        built = gx.ExpectationSuite(name="test_gate.language")
        built.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="language", regex=r"^[a-z]{2}$"))
        built.add_expectation(gxe.ExpectColumnValuesToNotMatchRegexList(column="language", regex_list=["@"]))
        return built

    data = pd.DataFrame({"language": ["de", SECRET_EMAILS[0], "Klingon"]})
    result = run_gate("test_gate", "language", language_suite, data, classes={"language": "none"})
    assert failed(result) == {
        ("expect_column_values_to_match_regex", "language"),
        ("expect_column_values_to_not_match_regex_list", "language"),
    }
    assert SECRET_EMAILS[0] not in stored(result)
    (format_check, _) = result.validation["results"]
    assert format_check["result"]["partial_unexpected_list"] == ["[withheld: looks like personal data]", "Klingon"]


def test_both_result_format_groups_validate_one_batch(monkeypatch):
    """The personal and the descriptive sub-suites share one GX batch: the frame is read (and
    fingerprinted by GX over every cell) once per gate, and the run's meta keeps
    ValidationDefinition.run's keys."""
    from great_expectations.execution_engine import pandas_execution_engine

    hashed: list[int] = []
    real = pandas_execution_engine.hash_pandas_dataframe
    monkeypatch.setattr(pandas_execution_engine, "hash_pandas_dataframe", lambda df: hashed.append(len(df)) or real(df))
    result = run_gate("test_gate", "subject", suite, frame(), classes=CLASSES)
    assert {o.result_format for o in result.outcomes} == {"counts only", "counts and a sample of values"}
    assert hashed == [3]
    meta = result.validation["meta"]
    assert {"validation_id", "run_id", "validation_time", "batch_parameters", "batch_markers"} <= set(meta)
    assert meta["batch_parameters"] == {"dataframe": "<DATAFRAME>"}
