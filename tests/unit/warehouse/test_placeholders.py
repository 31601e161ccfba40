"""`translate`: the library's DuckDB placeholders as psycopg2 expects them, never inside quoted text.

psycopg2 reads `%` as the start of a placeholder wherever it is, quoted or not, when parameters are
passed; DuckDB reads `?` and `$name` only outside quotes. The translation must agree with both.
"""

from __future__ import annotations

import pytest
from governed_marketing.warehouse.postgres import translate


@pytest.mark.parametrize(
    ("query", "params", "expected"),
    [
        ("select * from t where a = ? and b = ?", [1, 2], "select * from t where a = %s and b = %s"),
        ("select $name, $other_1", {"name": 1, "other_1": 2}, "select %(name)s, %(other_1)s"),
        # a `$word` that is no parameter stays (dollar-quoted bodies, `$1` never used by the library)
        ("select $name, $unknown", {"name": 1}, "select %(name)s, $unknown"),
        # dict params: a `?` is no placeholder; list params: a `$name` is none
        ("select ? , $x", {"x": 1}, "select ? , %(x)s"),
        ("select ?, $x", [1], "select %s, $x"),
        # quoted text keeps its `?` and `$name`, and its `%` is escaped
        ("select 'what? $x 5%' || ?", [1], "select 'what? $x 5%%' || %s"),
        ("select * from t where a like 'ab%' and b = ?", [1], "select * from t where a like 'ab%%' and b = %s"),
        # a doubled quote does not end the literal
        ("select 'it''s ?' , ?", [1], "select 'it''s ?' , %s"),
        # quoted identifiers are text too
        ('select "odd?name" from t where a = ?', [1], 'select "odd?name" from t where a = %s'),
        # `%` outside quotes (modulo) is escaped
        ("select a % 2 from t where b = ?", [1], "select a %% 2 from t where b = %s"),
    ],
)
def test_placeholders_become_psycopg2_ones_outside_quoted_text(query, params, expected) -> None:
    assert translate(query, params) == expected


@pytest.mark.parametrize("params", [None, []])
def test_without_parameters_the_query_is_sent_as_written(params) -> None:
    """psycopg2 does not interpret `%` when no parameters are passed: escaping would change the SQL."""
    query = "select a % 2, 'x%' from t"
    assert translate(query, params) == query


def test_an_unterminated_literal_swallows_the_rest_rather_than_inventing_placeholders() -> None:
    assert translate("select 'open ? literal", [1]) == "select 'open ? literal"
