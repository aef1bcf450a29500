"""Small scatter plots and grouped bar charts drawn with Pillow alone (no plotting library): labelled points or
bars, axes, ticks, legend."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
MARKERS = ["circle", "square", "diamond", "triangle"]


@dataclass
class Panel:
    title: str
    x_label: str
    y_label: str
    points: list[tuple[str, float, float]]  # (name, x, y)


def font(size: int):
    """Pillow's bundled scalable font (Pillow >= 10.1 with FreeType), else its small bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow without the size argument
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        pad = max(abs(lo) * 0.1, 1e-3)
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(first + k * step)
        k += 1
    if ticks[-1] < hi:
        ticks.append(ticks[-1] + step)
    return ticks


def _tick_label(v: float, step: float) -> str:
    mag = math.floor(math.log10(step))
    decimals = max(0, -mag + (1 if abs(step / 10 ** mag - 2.5) < 1e-6 else 0))
    return f"{v:.{decimals}f}"


def _marker(draw: ImageDraw.ImageDraw, kind: str, x: float, y: float, r: float, color: str) -> None:
    if kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=color, outline="black")
    elif kind == "diamond":
        draw.polygon([(x, y - r * 1.3), (x + r * 1.3, y), (x, y + r * 1.3), (x - r * 1.3, y)], fill=color,
                     outline="black")
    elif kind == "triangle":
        draw.polygon([(x, y - r * 1.3), (x + r * 1.2, y + r), (x - r * 1.2, y + r)], fill=color, outline="black")
    else:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color, outline="black")


def _text_size(draw, text, f) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=f)
    return box[2] - box[0], box[3] - box[1]


def _rotated_label(draw, text: str, f) -> Image.Image:
    """The text on a transparent image turned 90 degrees (reading upwards), glyphs whole: the text box
    starts below and right of the origin (the font's ascent), so it is drawn shifted back by that much."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=f)
    label = Image.new("RGBA", (x1 - x0 + 8, y1 - y0 + 8), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((4 - x0, 4 - y0), text, font=f, fill="black")
    return label.rotate(90, expand=True)


def _draw_panel(img: Image.Image, box: tuple[int, int, int, int], panel: Panel, styles: dict, fs: int) -> None:
    draw = ImageDraw.Draw(img)
    f, f_small, f_title = font(fs), font(fs - 2), font(fs + 2)
    left, top, right, bottom = box
    pts = [(n, x, y) for n, x, y in panel.points if math.isfinite(x) and math.isfinite(y)]
    xs = [p[1] for p in pts] or [0.0]
    ys = [p[2] for p in pts] or [0.0]

    def padded(vals):
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.15 if hi > lo else max(abs(lo) * 0.1, 1e-3)
        # distances are never negative: no axis below zero for them
        return nice_ticks(max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad)

    xt, yt = padded(xs), padded(ys)
    # plot area inside the panel: room for the y tick labels, the axis labels and the title
    y_label_w = max(_text_size(draw, _tick_label(v, yt[1] - yt[0] if len(yt) > 1 else 1), f_small)[0] for v in yt)
    px0, px1 = left + y_label_w + fs * 2 + 14, right - 16
    py0, py1 = top + fs * 2 + 10, bottom - fs * 3 - 10
    draw.text(((px0 + px1) / 2, top + 4), panel.title, font=f_title, fill="black", anchor="ma")

    def sx(v):
        return px0 + (v - xt[0]) / (xt[-1] - xt[0]) * (px1 - px0)

    def sy(v):
        return py1 - (v - yt[0]) / (yt[-1] - yt[0]) * (py1 - py0)

    for v in xt:  # grid and ticks
        draw.line([(sx(v), py0), (sx(v), py1)], fill="#e4e4e4")
        draw.line([(sx(v), py1), (sx(v), py1 + 5)], fill="black")
        draw.text((sx(v), py1 + 8), _tick_label(v, xt[1] - xt[0]), font=f_small, fill="black", anchor="ma")
    for v in yt:
        draw.line([(px0, sy(v)), (px1, sy(v))], fill="#e4e4e4")
        draw.line([(px0 - 5, sy(v)), (px0, sy(v))], fill="black")
        draw.text((px0 - 8, sy(v)), _tick_label(v, yt[1] - yt[0]), font=f_small, fill="black", anchor="rm")
    draw.rectangle([px0, py0, px1, py1], outline="black")
    draw.text(((px0 + px1) / 2, bottom - fs - 4), panel.x_label, font=f, fill="black", anchor="ms")
    # rotated y label
    label = _rotated_label(draw, panel.y_label, f)
    img.paste(label, (left + 2, int((py0 + py1) / 2 - label.height / 2)), label)
    r = max(5, fs // 2)
    taken = [(sx(x) - r - 5, sy(y) - r - 5, sx(x) + r + 5, sy(y) + r + 5) for _, x, y in pts]
    for name, x, y in pts:
        color, marker = styles[name]
        _marker(draw, marker, sx(x), sy(y), r, color)
    for name, x, y in pts:
        box = _label_box(draw, name, f, sx(x), sy(y), r, taken, (px0, py0, px1, py1))
        taken.append(box)
        draw.text((box[0], box[1]), name, font=f, fill="black", anchor="lt")


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_box(draw, text, f, x, y, r, taken, area):
    """Where a point's label goes: right of it, else left, above, below, ... the first spot that stays
    inside the plot and overlaps no marker or earlier label (right of the point if none does)."""
    left_top = draw.textbbox((0, 0), text, font=f, anchor="lt")
    w, h = left_top[2] - left_top[0], left_top[3] - left_top[1]
    gap = r + 6
    spots = [(x + gap, y - h / 2), (x - gap - w, y - h / 2), (x - w / 2, y - gap - h), (x - w / 2, y + gap),
             (x + gap, y - gap - h), (x + gap, y + gap), (x - gap - w, y - gap - h), (x - gap - w, y + gap)]
    boxes = [(bx, by, bx + w, by + h) for bx, by in spots]
    inside = [b for b in boxes if b[0] >= area[0] + 2 and b[2] <= area[2] - 2 and b[1] >= area[1] + 2
              and b[3] <= area[3] - 2]
    for b in inside:
        if not any(_overlaps(b, t) for t in taken):
            return b
    return inside[0] if inside else boxes[0]


def scatter_panels(panels: list[Panel], path, title: str = "", panel_size: tuple[int, int] = (620, 520),
                   font_size: int = 18) -> Path:
    """Side-by-side scatter panels sharing one legend (one colour and marker per point name); saves PNG."""
    names = list(dict.fromkeys(n for p in panels for n, _, _ in p.points))
    styles = {n: (COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]) for i, n in enumerate(names)}
    legend_h = font_size * 2 + 12
    title_h = font_size * 2 + 8 if title else 0
    width = panel_size[0] * max(1, len(panels))
    img = Image.new("RGB", (width, title_h + panel_size[1] + legend_h), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((width / 2, 8), title, font=font(font_size + 4), fill="black", anchor="ma")
    for i, p in enumerate(panels):
        _draw_panel(img, (i * panel_size[0], title_h, (i + 1) * panel_size[0], title_h + panel_size[1]), p, styles,
                    font_size)
    # legend: one row, centred under the panels, in a box
    _legend_row(draw, [(n, *styles[n]) for n in names], width, title_h + panel_size[1] + legend_h / 2, font_size,
                box=True)
    return _save(img, path)


def _legend_row(draw, entries, width: int, y: float, font_size: int, box: bool) -> None:
    """One centred row of (name, colour, marker) legend entries at height y, optionally boxed."""
    f, probe = font(font_size), ImageDraw.Draw(Image.new("RGB", (1, 1)))
    r = max(5, font_size // 2)
    widths = [2 * r + 8 + _text_size(probe, n, f)[0] for n, _, _ in entries]
    total = sum(widths) + 24 * max(0, len(entries) - 1)
    x = (width - total) / 2
    if box and entries:
        draw.rectangle([x - 12, y - font_size, x + total + 12, y + font_size], outline="#888888")
    for (n, color, marker), w in zip(entries, widths):
        _marker(draw, marker, x + r, y, r, color)
        draw.text((x + 2 * r + 8, y), n, font=f, fill="black", anchor="lm")
        x += w + 24


def _save(img, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


@dataclass
class BarPanel:
    title: str
    y_label: str
    groups: list[str]  # x positions (e.g. attributes)
    values: dict[str, list[float | None]]  # series name (e.g. method) -> one value per group; None: not measured


def _draw_bars(img: Image.Image, box: tuple[int, int, int, int], panel: BarPanel, styles: dict, fs: int) -> None:
    draw = ImageDraw.Draw(img)
    f, f_small, f_title = font(fs), font(fs - 2), font(fs + 2)
    left, top, right, bottom = box
    vals = [v for vs in panel.values.values() for v in vs if v is not None and math.isfinite(v)] or [0.0]
    yt = nice_ticks(min(0.0, min(vals)), max(vals) * 1.1 if max(vals) > 0 else 1.0)
    y_label_w = max(_text_size(draw, _tick_label(v, yt[1] - yt[0]), f_small)[0] for v in yt)
    px0, px1 = left + y_label_w + fs * 2 + 14, right - 16
    py0, py1 = top + fs * 2 + 10, bottom - fs * 2 - 10
    draw.text(((px0 + px1) / 2, top + 4), panel.title, font=f_title, fill="black", anchor="ma")

    def sy(v):
        return py1 - (v - yt[0]) / (yt[-1] - yt[0]) * (py1 - py0)

    for v in yt:
        draw.line([(px0, sy(v)), (px1, sy(v))], fill="#e4e4e4")
        draw.text((px0 - 8, sy(v)), _tick_label(v, yt[1] - yt[0]), font=f_small, fill="black", anchor="rm")
    draw.rectangle([px0, py0, px1, py1], outline="black")
    n_groups, series = max(1, len(panel.groups)), list(panel.values)
    slot = (px1 - px0) / n_groups
    bar_w = slot * 0.8 / max(1, len(series))
    for gi, name in enumerate(panel.groups):
        x0 = px0 + gi * slot + slot * 0.1
        for si, s in enumerate(series):
            v = panel.values[s][gi]
            if v is None or not math.isfinite(v):
                continue
            color = styles[s][0]
            draw.rectangle([x0 + si * bar_w, min(sy(v), sy(0)), x0 + (si + 1) * bar_w - 1, max(sy(v), sy(0))],
                           fill=color, outline="black")
        draw.text((px0 + (gi + 0.5) * slot, py1 + 6), name, font=f_small, fill="black", anchor="ma")
    label = _rotated_label(draw, panel.y_label, f)
    img.paste(label, (left + 2, int((py0 + py1) / 2 - label.height / 2)), label)


def bar_panels(panels: list[BarPanel], path, title: str = "", panel_size: tuple[int, int] = (620, 420),
               font_size: int = 18, columns: int = 2) -> Path:
    """Grouped bar charts in a grid of `columns`, one colour per series shared by all panels; saves PNG."""
    names = list(dict.fromkeys(n for p in panels for n in p.values))
    styles = {n: (COLORS[i % len(COLORS)], "square") for i, n in enumerate(names)}
    cols = max(1, min(columns, len(panels)))
    rows = max(1, math.ceil(len(panels) / cols))
    legend_h = font_size * 2 + 12
    title_h = font_size * 2 + 8 if title else 0
    width = panel_size[0] * cols
    img = Image.new("RGB", (width, title_h + rows * panel_size[1] + legend_h), "white")
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((width / 2, 8), title, font=font(font_size + 4), fill="black", anchor="ma")
    for i, p in enumerate(panels):
        x, y = (i % cols) * panel_size[0], title_h + (i // cols) * panel_size[1]
        _draw_bars(img, (x, y, x + panel_size[0], y + panel_size[1]), p, styles, font_size)
    _legend_row(draw, [(n, styles[n][0], "square") for n in names], width, title_h + rows * panel_size[1] + legend_h / 2,
                font_size, box=False)
    return _save(img, path)
