"""Self-contained HTML reports: pictures embedded as PNG, tables, short notes.

A report is one file that opens in any browser, can be mailed or archived with the results, and
needs no server or asset folder.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from histoblur.io.atomic import write_text_atomic
from histoblur.io.images import to_rgb

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.3rem;text-align:center;vertical-align:top}
figure img{max-width:210px}
.scroll{overflow-x:auto}
figcaption{font-size:.8rem;color:#555;max-width:260px}
img{border:1px solid #ccc;image-rendering:auto}
.note{color:#555;font-size:.9rem}
"""


def png_data_uri(image: np.ndarray, max_side: int = 320) -> str:
    """Encode an image (grey/RGB/RGBA, uint8/uint16) as a PNG data URI at most ``max_side`` px."""
    rgb = to_rgb(image)
    if rgb.dtype != np.uint8:
        rgb = (rgb.astype(np.float32) / np.iinfo(rgb.dtype).max * 255).round().astype(np.uint8)
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("Cannot encode a picture for the report.")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


@dataclass
class HtmlReport:
    """Accumulates sections, then writes one HTML file atomically."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str) -> None:
        """Start a section."""
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def note(self, text: str) -> None:
        """A short paragraph."""
        self.parts.append(f"<p class='note'>{html.escape(text)}</p>")

    def figures(self, items: Sequence[tuple[str, np.ndarray]], max_side: int = 260) -> None:
        """A row of captioned pictures."""
        cells = [
            f"<figure><img src='{png_data_uri(img, max_side)}' alt='{html.escape(cap)}'>"
            f"<figcaption>{html.escape(cap)}</figcaption></figure>"
            for cap, img in items
        ]
        self.parts.append("<div>" + "".join(cells) + "</div>")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table; floats are shown with 4 significant digits."""
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        self.parts.append(
            f"<div class='scroll'><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>"
        )

    def render(self) -> str:
        """The complete HTML document."""
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>" + "\n".join(self.parts) + "</body></html>\n"
        )

    def write(self, path: Path) -> Path:
        """Write the report atomically and return its path."""
        return write_text_atomic(Path(path), self.render())


def _fmt(value: object) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):.4g}"
    return str(value)


def outline(
    image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 200, 0)
) -> np.ndarray:
    """RGB copy of ``image`` with the boundary of ``mask`` drawn in ``colour``."""
    rgb = np.array(to_rgb(image), copy=True, order="C")
    if rgb.dtype != np.uint8:
        rgb = (rgb.astype(np.float32) / np.iinfo(rgb.dtype).max * 255).round().astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, colour, max(1, round(max(rgb.shape[:2]) / 300)))
    return rgb


def heatmap(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """RGB false-colour picture of a 2-D float map (OpenCV's viridis)."""
    lo = float(np.min(values)) if lo is None else lo
    hi = float(np.max(values)) if hi is None else hi
    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1)
    coloured = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    return cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)


def colour_bar(width: int = 256, height: int = 12) -> np.ndarray:
    """RGB legend of :func:`heatmap` from 0 (left) to 1 (right), built with the same colormap.

    >>> bar = colour_bar(256, 4)
    >>> bar.shape, bool((bar[0, 0] == heatmap(np.zeros((1, 1)), 0.0, 1.0)[0, 0]).all())
    ((4, 256, 3), True)
    """
    ramp = np.tile(np.linspace(0.0, 1.0, width), (height, 1))
    return heatmap(ramp, 0.0, 1.0)
