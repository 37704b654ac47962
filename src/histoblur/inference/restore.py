"""Restore masked regions of images of any size with a trained restoration denoiser.

:class:`Restorer` loads a denoiser checkpoint (its noise schedule is stored with it). Each
connected masked region is restored in a window around it (the region plus ``context`` pixels,
rounded up to the network's multiple); a region wider than ``max_window`` is restored window by
window, later windows seeing the earlier windows' result as known context. Only masked pixels
change: everything else is the input, bit for bit. :func:`detect_and_restore` is the QC loop:
detect artifact regions, restore them, detect again on the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from histoblur.diffusion.regional import RestoreSettings, restore_region
from histoblur.diffusion.schedule import ScheduleConfig
from histoblur.errors import InputError
from histoblur.inference.segment import resolve_model
from histoblur.io.images import check_image, from_float, to_float, to_rgb
from histoblur.models.registry import load_task_model

SHIPPED = {"default": "restore-default"}
CONTEXT, MAX_WINDOW = 32, 256


@dataclass
class Restorer:
    """A loaded restoration denoiser and its schedule."""

    model: torch.nn.Module
    schedule: ScheduleConfig
    multiple: int

    @classmethod
    def load(cls, model: str | Path = "default") -> Restorer:
        """The shipped denoiser (``default``) or a checkpoint folder.

        Raises:
            InputError: missing, corrupt or untrusted checkpoint, or one of another task.
        """
        path = resolve_model(model, SHIPPED)
        network, config = load_task_model(path, "restore-denoiser", "a restoration denoiser")
        schedule = ScheduleConfig.model_validate(config.get("inference", {}).get("schedule", {}))
        return cls(network, schedule, int(network.config.multiple))

    def restore(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        settings: RestoreSettings,
        seed: int = 0,
    ) -> np.ndarray:
        """``image`` with its ``mask`` (H, W, bool) regions regenerated; same dtype and channels.

        Raises:
            InputError: a mask of another size.
        """
        check_image(image)
        if mask.shape != image.shape[:2]:
            raise InputError(
                f"The mask is {mask.shape[1]} x {mask.shape[0]} px but the image is "
                f"{image.shape[1]} x {image.shape[0]} px."
            )
        work = to_float(to_rgb(image)).copy()
        generator = torch.Generator().manual_seed(seed)
        for y0, x0, y1, x1 in self.windows(mask):
            crop = torch.from_numpy(work[y0:y1, x0:x1].transpose(2, 0, 1)[None].copy())
            region = torch.from_numpy(mask[y0:y1, x0:x1][None, None].copy())
            out = restore_region(self.model, crop, region, self.schedule, settings, generator)
            work[y0:y1, x0:x1] = out[0].permute(1, 2, 0).numpy()
        restored = from_float(work, image.dtype)
        if image.ndim == 2 or image.shape[2] == 1:
            restored = cv2.cvtColor(restored, cv2.COLOR_RGB2GRAY).reshape(image.shape)
        elif image.shape[2] == 4:
            restored = np.concatenate([restored, image[..., 3:]], axis=2)
        result = image.copy()
        result[mask] = restored[mask]  # outside the mask: the input, bit for bit
        return result

    def windows(self, mask: np.ndarray) -> list[tuple[int, int, int, int]]:
        """``(y0, x0, y1, x1)`` windows (multiples of the network's multiple) covering the mask."""
        h, w = mask.shape
        m = self.multiple
        side_max = max(m, MAX_WINDOW // m * m)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
        core = max(m, side_max - 2 * CONTEXT)  # masked pixels one window restores, per side
        out = []
        for x, y, bw, bh, _ in stats[1:count]:
            for wy in range(y, y + bh, core):
                for wx in range(x, x + bw, core):
                    ey, ex = min(y + bh, wy + core), min(x + bw, wx + core)
                    out.append(
                        _fit(wy - CONTEXT, wx - CONTEXT, ey + CONTEXT, ex + CONTEXT, h, w, m)
                    )
        return out


@dataclass(frozen=True)
class LoopResult:
    """One pass of the detect -> restore -> detect loop."""

    restored: np.ndarray
    flagged: np.ndarray  # (H, W) bool: what the detector flagged and the restorer regenerated
    after: np.ndarray  # (H, W) bool: what the detector flags on the restored image

    @property
    def flagged_fraction(self) -> float:
        """Share of pixels flagged on the input."""
        return float(self.flagged.mean())

    @property
    def after_fraction(self) -> float:
        """Share of pixels still flagged after restoration."""
        return float(self.after.mean())


def detect_and_restore(
    restorer: Restorer,
    detect: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    settings: RestoreSettings,
    seed: int = 0,
) -> LoopResult:
    """Flag artifacts with ``detect``, restore only those pixels, and detect again."""
    flagged = detect(image)
    restored = restorer.restore(image, flagged, settings, seed) if flagged.any() else image.copy()
    return LoopResult(restored, flagged, detect(restored))


def _fit(y0: int, x0: int, y1: int, x1: int, h: int, w: int, m: int) -> tuple[int, int, int, int]:
    """The window grown to a multiple of ``m`` and shifted inside the image.

    An image side shorter than the window gets the largest multiple of ``m`` that fits.
    """

    def axis(a: int, b: int, size: int) -> tuple[int, int]:
        length = min(-(-(b - a) // m) * m, size // m * m)
        start = min(max(0, a - (length - (b - a)) // 2), size - length)
        return start, start + length

    (ya, yb), (xa, xb) = axis(y0, y1, h), axis(x0, x1, w)
    if yb <= ya or xb <= xa:
        raise InputError(f"The image is smaller than the network's {m} px multiple.")
    return ya, xa, yb, xb
