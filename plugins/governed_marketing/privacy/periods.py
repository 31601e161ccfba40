"""Periods written in governance.yml (`30d`, `24mo`, `6y`, `1 month`) as calendar arithmetic.

Months are calendar months, as EU law counts time limits (Regulation 1182/71 Art. 3(2)(c)): a month
from 31 January ends on the last day of February. `dateutil.relativedelta` clamps the same way.
"""

from __future__ import annotations

import re

from dateutil.relativedelta import relativedelta

from governed_marketing.errors import PolicyError

#: A period as governance.yml writes it; `parse_period` reads it, the policy's validators check it.
PERIOD = re.compile(r"^(\d+)\s*(d|days?|mo|months?|y|years?)$")


def parse_period(text: str, *, key: str) -> relativedelta:
    """`30d` -> 30 days, `24mo` / `1 month` -> calendar months, `6y` -> calendar years.

    Raises:
        PolicyError: naming the governance.yml key whose value is not a period.
    """
    match = PERIOD.match(str(text).strip().lower())
    if not match:
        raise PolicyError(f"governance.yml: {key}: {text!r} is not a period like 30d, 24mo, 6y or '1 month'")
    amount, unit = int(match[1]), match[2]
    if unit.startswith("d"):
        return relativedelta(days=amount)
    if unit.startswith("m"):
        return relativedelta(months=amount)
    return relativedelta(years=amount)


def at_least(period: relativedelta, floor: relativedelta) -> relativedelta:
    """The longer of two periods (compared from a fixed day, which is exact for whole years and days)."""
    from datetime import date

    anchor = date(2000, 1, 1)
    return period if anchor + period >= anchor + floor else floor
