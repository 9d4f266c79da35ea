"""A line chart as inline SVG, written here (no chart library, nothing from a CDN).

The rounds page plots one metric per round. The SVG uses presentation
attributes only (no ``style``), so the console's Content-Security-Policy, which
admits no inline styles, leaves it intact; every label is escaped.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

from markupsafe import Markup

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 44


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.floor(lo / step) * step
    out, v = [], start
    while v <= hi + step * 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def line_chart(points: Sequence[tuple[int, float]], *, title: str, y_label: str,
               y_range: tuple[float, float] | None = None) -> Markup:
    """``points`` (round, value) as an SVG line chart; an empty list gives a chart saying so."""
    pts = sorted((int(x), float(y)) for x, y in points if y is not None and math.isfinite(float(y)))
    title_e, label_e = escape(title), escape(y_label)
    parts = [f'<svg class="chart" role="img" aria-label="{title_e}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
             f'<title>{title_e}</title>',
             f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
             f'<text x="{LEFT}" y="18" font-size="13" font-weight="bold" fill="#1f2933">{title_e}</text>']
    if not pts:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="13" fill="#616e7c">'
                     'no round has a recorded metric yet</text></svg>')
        return Markup("".join(parts))
    xs = [x for x, _ in pts]
    ys = [y for _, y in pts]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = y_range if y_range else (min(ys), max(ys))
    if y_range is None:
        pad = (y_hi - y_lo) * 0.1 or 0.05
        y_lo, y_hi = y_lo - pad, y_hi + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

    for t in _ticks(y_lo, y_hi):
        if y_lo - 1e-12 <= t <= y_hi + 1e-12:
            parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
                         'stroke="#e4e7eb" stroke-width="1"/>')
            parts.append(f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="11" '
                         f'fill="#52606d">{t:g}</text>')
    for x in range(x_lo, x_hi + 1) if x_hi - x_lo <= 20 else sorted(set(xs)):
        parts.append(f'<text x="{px(x):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11" '
                     f'fill="#52606d">{x}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
                 'stroke="#9aa5b1" stroke-width="1"/>')
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle" font-size="12" '
                 'fill="#323f4b">round</text>')
    parts.append(f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" font-size="12" fill="#323f4b" '
                 f'transform="rotate(-90 14 {TOP + plot_h / 2})">{label_e}</text>')
    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
    parts.append(f'<polyline points="{line}" fill="none" stroke="#2563eb" stroke-width="2.5"/>')
    for x, y in pts:
        parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="#2563eb">'
                     f'<title>round {x}: {y:.4f}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))
