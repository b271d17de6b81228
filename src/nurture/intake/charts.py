"""Small charts for the dashboard, drawn on the server as inline SVG: no script, no library, nothing fetched from a
CDN, so the page works offline and prints. Each chart is a ``<svg>`` with a ``<title>`` per point for hovering."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#2f6fdf", "#e8772e", "#2a9d6a", "#a45ad6", "#d64550", "#6b7280")
WIDTH, HEIGHT = 560, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 12, 36


def _nice_max(value: float) -> float:
    """A round upper bound for the axis (1, 2, 5 × a power of ten)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _frame(top: float, labels: Sequence[str], unit: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="#c9cfdb"/>']
    for fraction in (0.5, 1.0):
        y = HEIGHT - BOTTOM - plot_h * fraction
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#eceef2"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{top * fraction:g}{unit}</text>')
    step = max(1, len(labels) // 8)
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    for index, label in enumerate(labels):
        if index % step == 0:
            x = LEFT + slot * (index + 0.5)
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">{escape(label)}</text>')
    return parts


def _svg(parts: list[str], legend: Sequence[str], label: str) -> str:
    keys = "".join(
        f'<g transform="translate({LEFT + 110 * i},{HEIGHT - 8})"><rect width="10" height="10" y="-9" '
        f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="14">{escape(name)}</text></g>'
        for i, name in enumerate(legend))
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}{keys}</svg>')


def line_chart(labels: Sequence[str], series: dict[str, Sequence[float | None]], *, label: str) -> str:
    """Lines over ``labels`` (weeks, months), one per series; None leaves a gap."""
    top = _nice_max(max((v for values in series.values() for v in values if v is not None), default=0))
    parts = _frame(top, labels, "")
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    plot_h = HEIGHT - TOP - BOTTOM
    for i, (name, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        points = [(LEFT + slot * (x + 0.5), HEIGHT - BOTTOM - plot_h * v / top, v, labels[x])
                  for x, v in enumerate(values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _v, _l in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{escape(name)} {escape(lab)}: '
                  f'{v:g}</title></circle>' for x, y, v, lab in points]
    return _svg(parts, list(series), label)


def bar_chart(labels: Sequence[str], values: Sequence[float | None], *, label: str, unit: str = "",
              signed: bool = False) -> str:
    """One bar per label; with ``signed``, bars below a middle line for negative values (growth rates)."""
    present = [abs(v) for v in values if v is not None]
    top = _nice_max(max(present, default=0))
    parts = _frame(top, labels, unit)
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    plot_h = HEIGHT - TOP - BOTTOM
    base = HEIGHT - BOTTOM - (plot_h / 2 if signed else 0)
    scale = plot_h / (2 * top if signed else top)
    for index, value in enumerate(values):
        if value is None:
            continue
        height = abs(value) * scale
        y = base - height if value >= 0 else base
        colour = PALETTE[0] if value >= 0 else PALETTE[4]
        parts.append(f'<rect x="{LEFT + slot * index + slot * 0.15:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                     f'height="{max(height, 0.5):.1f}" fill="{colour}"><title>{escape(labels[index])}: '
                     f'{value:g}{unit}</title></rect>')
    if signed:
        parts.append(f'<line x1="{LEFT}" y1="{base:.1f}" x2="{WIDTH - RIGHT}" y2="{base:.1f}" stroke="#8a92a3"/>')
    return _svg(parts, [], label)
