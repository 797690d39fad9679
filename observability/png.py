"""Render key dashboard panels to PNG (for the README), from the same panels and Prometheus data."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from observability.live_panels import find_panel, legend, live_dashboards
from observability.prometheus_api import PrometheusAPI

# (dashboard uid, panel title) of the panels the README shows.
KEY_PANELS = (
    ("tritonfleet-overview", "Inference rate by model"),
    ("tritonfleet-overview", "Average request latency by model"),
    ("tritonfleet-models", "Latency breakdown per request"),
    ("tritonfleet-overview", "Pending requests per Triton pod"),
    ("tritonfleet-gateway", "Requests per backend"),
    ("tritonfleet-video", "Video frames per second"),
)
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c", "#8ab8ff", "#96d98d"]
BACKGROUND, GRID, TEXT = "#181b1f", "#2c3235", "#d8d9da"
WIDTH, HEIGHT, LEFT, TOP, BOTTOM = 800, 320, 70, 34, 60


def slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-").replace("--", "-")


def fetch_series(api: PrometheusAPI, panel: dict, start: float, end: float, step: float) -> list[dict]:
    series = []
    for tgt in panel["targets"]:
        for result in api.query_range(tgt["expr"], start, end, step):
            points = [(float(t), float(v)) for t, v in result["values"]]
            points = [(t, v) for t, v in points if math.isfinite(v)]
            if points:
                series.append({"name": legend(tgt["legend"], result["metric"]), "points": points})
    return series


def draw_panel(panel: dict, series: list[dict], start: float, end: float) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    unit = f" ({panel['unit']})" if panel["unit"] not in ("", "none") else ""
    draw.text((10, 8), panel["title"] + unit, fill=TEXT, font=font)
    values = [v for s in series for _, v in s["points"]]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    hi = hi if hi > lo else lo + 1
    plot_w, plot_h = WIDTH - LEFT - 10, HEIGHT - TOP - BOTTOM

    def xy(t: float, v: float) -> tuple[float, float]:
        return LEFT + (t - start) / (end - start) * plot_w, TOP + (1 - (v - lo) / (hi - lo)) * plot_h

    for i in range(5):
        v = lo + (hi - lo) * i / 4
        _, yy = xy(start, v)
        draw.line([(LEFT, yy), (WIDTH - 10, yy)], fill=GRID)
        draw.text((6, yy - 6), f"{v:.3g}", fill=TEXT, font=font)
        t = start + (end - start) * i / 4
        xx, _ = xy(t, lo)
        draw.text((min(xx - 22, WIDTH - 56), TOP + plot_h + 4), datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S"),
                  fill=TEXT, font=font)
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        draw.line([xy(t, v) for t, v in s["points"]], fill=color, width=2)
        lx, ly = 10 + (i % 4) * 195, HEIGHT - 34 + (i // 4) * 14
        draw.rectangle([lx, ly + 4, lx + 10, ly + 7], fill=color)
        draw.text((lx + 14, ly), s["name"][:30], fill=TEXT, font=font)
    return image


def render_key_panels(prometheus_url: str, out_dir: Path, range_s: int = 600,
                      rate_interval: str = "1m") -> tuple[list[Path], list[str]]:
    """Write one PNG per key panel that has data; returns (written files, titles without data)."""
    api = PrometheusAPI(prometheus_url)
    boards = live_dashboards(rate_interval)
    end = time.time()
    start = end - range_s
    step = max(1.0, range_s / 300)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, empty = [], []
    for uid, title in KEY_PANELS:
        panel = find_panel(boards, uid, title)
        series = fetch_series(api, panel, start, end, step)
        if not series:
            empty.append(title)
            continue
        path = out_dir / f"{slug(title)}.png"
        draw_panel(panel, series, start, end).save(path)
        written.append(path)
    return written, empty
