"""The one colour of blurred tissue in whole-slide QC outputs, defined once.

The slide overlay (tint and outline), the slide report's legend and the GeoJSON class colour that
QuPath shows all use :data:`BLUR_COLOR`, so a region reads the same in the report and in QuPath.
Amber stands out on haematoxylin and eosin and on DAB-stained IHC alike, and is not a stain
colour. The probability heatmap uses viridis (:func:`histoblur.io.report.heatmap`), whose high
end is yellow, close to this amber.

Examples:
    >>> BLUR_COLOR, BLUR_COLOR_NAME, css_rgb(BLUR_COLOR)
    ((255, 190, 0), 'amber', 'rgb(255,190,0)')
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["BLUR_ALPHA", "BLUR_COLOR", "BLUR_COLOR_NAME", "css_rgb"]

BLUR_COLOR: tuple[int, int, int] = (255, 190, 0)  # (R, G, B)
BLUR_COLOR_NAME = "amber"  # how captions and notes name it
BLUR_ALPHA = 0.55  # opacity of the tint over blurred tissue in the overlay


def css_rgb(color: Sequence[int]) -> str:
    """A colour as CSS ``rgb(r,g,b)``."""
    r, g, b = (int(v) for v in color)
    return f"rgb({r},{g},{b})"
