"""A picture of the fitted PSFs side by side (drawn with numpy and OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np

from histoblur.calibration.config import IDENTITY
from histoblur.calibration.fit import FamilyFit
from histoblur.calibration.search import crop_centre


def kernel_montage(fits: tuple[FamilyFit, ...] | list[FamilyFit], cell: int = 160) -> np.ndarray:
    """Fitted PSFs side by side as an RGB uint8 picture (inferno colour map, one label each).

    Kernels are placed on a common centred grid (the largest kernel, at most 65 px) so sizes
    compare across panels; each panel is scaled to its own peak and enlarged without smoothing.
    """
    kernels = [f for f in fits if f.family != IDENTITY] or list(fits)
    side = min(max(max(f.kernel.shape) for f in kernels), 65)
    side += 1 - side % 2
    scale = max(1, cell // side)
    panel = side * scale
    label_h = 40
    panels = []
    for f in kernels:
        k = crop_centre(f.kernel, side)
        k = k / k.max() if k.max() > 0 else k
        img = cv2.resize(
            (k * 255).astype(np.uint8), (panel, panel), interpolation=cv2.INTER_NEAREST
        )
        rgb = cv2.cvtColor(cv2.applyColorMap(img, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
        text = np.full((label_h, panel, 3), 255, np.uint8)
        cv2.putText(text, f.family, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)  # fmt: skip
        cv2.putText(text, f"{f.psnr:.2f} dB", (4, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (60, 60, 60), 1, cv2.LINE_AA)  # fmt: skip
        column = np.concatenate([rgb, text], axis=0)
        panels.append(np.pad(column, ((4, 4), (4, 4), (0, 0)), constant_values=255))
    return np.ascontiguousarray(np.concatenate(panels, axis=1))
