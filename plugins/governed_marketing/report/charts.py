"""Geometry for the inline SVG charts: numbers only, drawn by the template (no script, no assets)."""

from __future__ import annotations

from dataclasses import dataclass

LABEL_WIDTH = 300
BAR_WIDTH = 420
VALUE_WIDTH = 90
ROW_HEIGHT = 26
BAR_HEIGHT = 18


@dataclass
class Bar:
    label: str
    value: int
    kind: str  # base | excluded | kept
    x: int
    y: int
    width: int
    height: int = BAR_HEIGHT


@dataclass
class BarChart:
    title: str
    bars: list[Bar]
    width: int
    height: int
    label_width: int = LABEL_WIDTH


def funnel_chart(campaign_id: str, contacts: int, excluded: dict[str, int], audience: int) -> BarChart:
    """Valid contacts, what each exclusion reason removed, and the audience, on one scale."""
    rows = [("valid contacts", contacts, "base")]
    rows += [(f"excluded: {reason.replace('_', ' ')}", n, "excluded") for reason, n in excluded.items()]
    rows.append(("audience (eligible)", audience, "kept"))
    scale = max(contacts, audience, *excluded.values(), 1)
    bars = [
        Bar(
            label=label,
            value=value,
            kind=kind,
            x=LABEL_WIDTH,
            y=i * ROW_HEIGHT + 4,
            width=max(1 if value else 0, round(BAR_WIDTH * value / scale)),
        )
        for i, (label, value, kind) in enumerate(rows)
    ]
    return BarChart(
        title=f"Audience funnel for {campaign_id}",
        bars=bars,
        width=LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH,
        height=len(rows) * ROW_HEIGHT + 8,
    )
