"""A report's chart as inline SVG, drawn on the server: no CDN, no JavaScript library, nothing to load.

`render_chart(series, kind)` draws grouped bars ("bar"), stacked bars ("stacked") or lines ("line") with a
y axis (zero line and a few round ticks) and the category labels under the x axis. Coordinates are
computed in Decimal like every figure here, then written with one decimal place.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal

from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString

from revrec.selectors.report_types import Series

WIDTH = Decimal(760)
HEIGHT = Decimal(300)
LEFT, RIGHT, TOP, BOTTOM = Decimal(78), Decimal(12), Decimal(26), Decimal(64)
TICKS = 5
MAX_LABELS = 24  # beyond this many categories, only every n-th label is written under the axis
COLOURS = ("#2b6a7f", "#e0a030", "#7a9a3a", "#b04a4a", "#6a5a9a", "#3a8a8a", "#9a6a3a", "#5a5a5a")
ZERO = Decimal(0)
ONE = Decimal(1)


def _px(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'))}"


def _nice_step(span: Decimal) -> Decimal:
    """A round tick step (1, 2 or 5 times a power of ten) giving about TICKS ticks over `span`."""
    if span <= 0:
        return ONE
    raw = span / TICKS
    power = Decimal(10) ** (raw.adjusted())
    for factor in (1, 2, 5, 10):
        step = power * factor
        if step >= raw:
            return step
    return power * 10


def _label(value: Decimal) -> str:
    """An axis figure: thousands separated, no trailing zeros, k/M for big numbers."""
    magnitude = abs(value)
    if magnitude >= 1_000_000:
        return f"{(value / 1_000_000).normalize():f}M"
    if magnitude >= 10_000:
        return f"{(value / 1000).normalize():f}k"
    text = f"{value.normalize():f}"
    return text


def _categories(series: Sequence[Series]) -> list[str]:
    seen: dict[str, None] = {}
    for one in series:
        for label, _ in one.points:
            seen.setdefault(str(label), None)
    return list(seen)


def _values(one: Series) -> dict[str, Decimal]:
    return {str(label): Decimal(value) for label, value in one.points}


def render_chart(series: Sequence[Series], kind: str = "bar", *, title: str = "") -> SafeString:
    """The chart as an `<svg>` element; an empty string when there is nothing to draw."""
    categories = _categories(series)
    if not categories:
        return SafeString("")
    values = [_values(one) for one in series]
    stacked = kind == "stacked"
    if stacked:
        tops = [sum((max(v.get(c, ZERO), ZERO) for v in values), ZERO) for c in categories]
        bottoms = [sum((min(v.get(c, ZERO), ZERO) for v in values), ZERO) for c in categories]
        high, low = max([*tops, ZERO]), min([*bottoms, ZERO])
    else:
        every = [v.get(c, ZERO) for v in values for c in categories]
        high, low = max([*every, ZERO]), min([*every, ZERO])
    step = _nice_step(high - low)
    high = (high / step).to_integral_value(ROUND_CEILING) * step
    low = -((-low / step).to_integral_value(ROUND_CEILING) * step)
    if high == low:
        high = low + step
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y_of(value: Decimal) -> Decimal:
        return TOP + (high - value) * plot_h / (high - low)

    parts: list[str] = [format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="report-chart" role="img" viewBox="0 0 {} {}" '
        'width="100%" preserveAspectRatio="xMinYMin meet" font-family="sans-serif" font-size="11">',
        WIDTH, HEIGHT)]
    if title:
        parts.append(format_html("<title>{}</title>", title))
    # Horizontal grid and y-axis figures.
    tick = low
    while tick <= high:
        y = _px(y_of(tick))
        parts.append(format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="1"/>',
                                 _px(LEFT), y, _px(WIDTH - RIGHT), y, "#555" if tick == 0 else "#ddd"))
        parts.append(format_html('<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>',
                                 _px(LEFT - 6), y, _label(tick)))
        tick += step
    parts.append(format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#555"/>',
                             _px(LEFT), _px(TOP), _px(LEFT), _px(TOP + plot_h)))
    slot = plot_w / len(categories)
    every_nth = max(1, -(-len(categories) // MAX_LABELS))
    for index, category in enumerate(categories):
        if index % every_nth:
            continue
        x = LEFT + slot * index + slot / 2
        y = TOP + plot_h + 14
        parts.append(format_html(
            '<text x="{}" y="{}" text-anchor="end" transform="rotate(-35 {} {})">{}</text>',
            _px(x), _px(y), _px(x), _px(y), category[:18]))
    if kind == "line":
        parts.extend(_lines(categories, values, slot, y_of))
    else:
        parts.extend(_bars(categories, values, slot, y_of, stacked=stacked))
    parts.extend(_legend(series))
    parts.append(SafeString("</svg>"))
    # Every piece went through format_html (which escapes the labels), so joining them keeps them safe.
    return format_html_join("", "{}", ((part,) for part in parts))


def _bars(categories: list[str], values: list[dict[str, Decimal]], slot: Decimal, y_of, *,  # type: ignore[no-untyped-def]
          stacked: bool) -> list[str]:
    parts = []
    gap = slot / 5
    width = slot - gap if stacked else (slot - gap) / len(values)
    for index, category in enumerate(categories):
        left = LEFT + slot * index + gap / 2
        above = below = ZERO
        for number, series_values in enumerate(values):
            if category not in series_values:
                continue  # the series has no point here (zero is drawn: it is a figure)
            value = series_values[category]
            if stacked:
                base = above if value >= 0 else below
                top, bottom = (base + value, base) if value >= 0 else (base, base + value)
                if value >= 0:
                    above += value
                else:
                    below += value
                x = left
            else:
                top, bottom = max(value, ZERO), min(value, ZERO)
                x = left + width * number
            y_top, y_bottom = y_of(top), y_of(bottom)
            parts.append(format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {}</title></rect>',
                _px(x), _px(y_top), _px(max(width - ONE, ONE / 2)), _px(y_bottom - y_top),
                COLOURS[number % len(COLOURS)], category, f"{value:f}"))
    return parts


def _lines(categories: list[str], values: list[dict[str, Decimal]], slot: Decimal, y_of) -> list[str]:  # type: ignore[no-untyped-def]
    parts = []
    for number, series_values in enumerate(values):
        colour = COLOURS[number % len(COLOURS)]
        points = []
        for index, category in enumerate(categories):
            if category in series_values:
                points.append((LEFT + slot * index + slot / 2, y_of(series_values[category]), category,
                               series_values[category]))
        parts.append(format_html('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>', colour,
                                 " ".join(f"{_px(x)},{_px(y)}" for x, y, _, _ in points)))
        for x, y, category, value in points:
            parts.append(format_html('<circle cx="{}" cy="{}" r="3" fill="{}"><title>{}: {}</title></circle>',
                                     _px(x), _px(y), colour, category, f"{value:f}"))
    return parts


def _legend(series: Sequence[Series]) -> list[str]:
    parts = []
    x = LEFT
    for number, one in enumerate(series):
        colour = COLOURS[number % len(COLOURS)]
        parts.append(format_html('<rect x="{}" y="6" width="10" height="10" fill="{}"/>', _px(x), colour))
        parts.append(format_html('<text x="{}" y="15">{}</text>', _px(x + 14), one.name))
        x += Decimal(24 + 7 * len(escape(one.name)))
    return parts
