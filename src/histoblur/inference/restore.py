"""Restore masked regions of images of any size with a trained restoration denoiser.

:class:`Restorer` loads a denoiser checkpoint (its noise schedule is stored with it). Each
connected masked region is restored in a window around it (the region plus ``context`` pixels,
rounded up to the network's multiple); a region wider than ``max_window`` is restored window by
window, later windows seeing the earlier windows' result as known context. Windows of the same
shape, of one image or several (:meth:`Restorer.restore_many`), are denoised in one batch. Only
masked pixels change: everything else is the input, bit for bit. :func:`detect_and_restore` is
the QC loop: detect artifact regions, restore them, detect again on the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import ValidationError

from histoblur.diffusion.regional import (
    RestoreSettings,
    check_budget,
    keep_share,
    restore_region,
)
from histoblur.diffusion.schedule import ScheduleConfig
from histoblur.errors import InputError, ParameterError
from histoblur.inference.inpaint import inpaint
from histoblur.io.images import check_image, from_float, to_float, to_rgb
from histoblur.models.hub import load_pretrained
from histoblur.models.tiling import BATCH_SIZE

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1)
CONTEXT, MAX_WINDOW = 32, 256


@dataclass
class Restorer:
    """A loaded restoration denoiser and its schedule."""

    model: torch.nn.Module
    schedule: ScheduleConfig
    multiple: int

    @classmethod
    def load(cls, model: str | Path = "default", device: str = "cpu") -> Restorer:
        """The shipped denoiser (``default``) or a checkpoint folder, on ``device``.

        Args:
            model: ``default`` or a checkpoint folder.
            device: ``cpu``, ``cuda`` or ``auto`` (CUDA when available).

        Raises:
            InputError: missing, corrupt or untrusted checkpoint, one of another task, or
                ``cuda`` without a CUDA device.
        """
        network, config, path = load_pretrained(model, "restore-denoiser", device)
        try:
            schedule = ScheduleConfig.model_validate(
                config.get("inference", {}).get("schedule", {})
            )
        except ValidationError as exc:
            raise InputError(f"{path} holds an invalid noise schedule in its config.") from exc
        return cls(network, schedule, int(network.config.multiple))

    def restore(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        settings: RestoreSettings,
        seed: int = 0,
        batch_size: int = BATCH_SIZE,
    ) -> np.ndarray:
        """``image`` with its ``mask`` (H, W, bool) regions regenerated; same dtype and channels.

        Raises:
            InputError: a mask of another size.
        """
        return self.restore_many([image], [mask], settings, seed, batch_size)[0]

    def restore_many(
        self,
        images: list[np.ndarray],
        masks: list[np.ndarray],
        settings: RestoreSettings,
        seed: int = 0,
        batch_size: int = BATCH_SIZE,
    ) -> list[np.ndarray]:
        """:meth:`restore` for several images, their windows denoised ``batch_size`` at a time.

        Windows of one shape share a batch; a window overlapping an earlier window of its image
        waits for it, so it sees that window's result as context.

        Raises:
            InputError: a mask of another size than its image.
            ParameterError: settings beyond the schedule or the pass budget
                (:func:`~histoblur.diffusion.regional.check_budget`).
        """
        check_budget(settings, self.schedule)
        for image, mask in zip(images, masks, strict=True):
            check_image(image)
            if mask.shape != image.shape[:2]:
                raise InputError(
                    f"The mask is {mask.shape[1]} x {mask.shape[0]} px but the image is "
                    f"{image.shape[1]} x {image.shape[0]} px."
                )
        masks = [np.asarray(mask, dtype=bool) for mask in masks]
        starts = images
        if settings.strength < 1 and settings.start != "artifact":
            starts = [inpaint(im, m, settings.start) for im, m in zip(images, masks, strict=True)]
        work = [to_float(to_rgb(image)).copy() for image in starts]
        # every window walks with all of its change kept, so a later window's context is the
        # earlier walk itself; the share settings.weight is taken once, from the start, at the end
        walk = replace(settings, weight=1.0)
        first = [w.copy() for w in work] if settings.weight < 1 else work
        jobs = [(i, box) for i, mask in enumerate(masks) for box in self.windows(mask)]
        generator = torch.Generator().manual_seed(seed)
        while jobs:
            batch, jobs = _next_batch(jobs, max(1, batch_size))
            crops = np.stack([work[i][y0:y1, x0:x1] for i, (y0, x0, y1, x1) in batch])
            regions = np.stack([masks[i][y0:y1, x0:x1] for i, (y0, x0, y1, x1) in batch])
            device = next(self.model.parameters()).device
            out = restore_region(
                self.model,
                torch.from_numpy(crops.transpose(0, 3, 1, 2).copy()).to(device),
                torch.from_numpy(regions[:, None].copy()).to(device),
                self.schedule,
                walk,
                generator,
            ).cpu()
            for (i, (y0, x0, y1, x1)), restored in zip(batch, out, strict=True):
                work[i][y0:y1, x0:x1] = restored.permute(1, 2, 0).numpy()
        work = [keep_share(s, w, settings.weight) for s, w in zip(first, work, strict=True)]
        return [_finish(im, w, m) for im, w, m in zip(images, work, masks, strict=True)]

    def windows(self, mask: np.ndarray) -> list[Box]:
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


def _next_batch(
    jobs: list[tuple[int, Box]], size: int
) -> tuple[list[tuple[int, Box]], list[tuple[int, Box]]]:
    """(a batch of same-shape windows, the jobs left).

    No window in the batch overlaps an earlier window of its image, in the batch or waiting.
    """
    shape = (jobs[0][1][2] - jobs[0][1][0], jobs[0][1][3] - jobs[0][1][1])
    batch, left, seen = [], [], {}
    for i, box in jobs:
        free = not any(_overlap(box, other) for other in seen.get(i, []))
        if len(batch) < size and free and (box[2] - box[0], box[3] - box[1]) == shape:
            batch.append((i, box))
        else:
            left.append((i, box))
        seen.setdefault(i, []).append(box)
    return batch, left


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _finish(image: np.ndarray, work: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the masked pixels of the float RGB ``work``, in the image's own format."""
    restored = from_float(work, image.dtype)
    if image.ndim == 2 or image.shape[2] == 1:
        restored = cv2.cvtColor(restored, cv2.COLOR_RGB2GRAY).reshape(image.shape)
    elif image.shape[2] == 4:
        restored = np.concatenate([restored, image[..., 3:]], axis=2)
    result = image.copy()
    result[mask] = restored[mask]  # outside the mask: the input, bit for bit
    return result


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


Fill = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image, mask) -> image, mask changed only


def restoring(
    restorer: Restorer | None,
    settings: RestoreSettings,
    method: str = "diffusion",
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
) -> Fill:
    """``(image, mask) -> image`` restoring the masked pixels.

    ``diffusion``: ``restorer`` with ``settings``; ``telea``, ``ns``, ``laplace``,
    ``harmonise``: that classical fill (no restorer needed).

    Raises:
        ParameterError: ``diffusion`` without a restorer.
    """
    if method != "diffusion":
        return lambda image, mask: inpaint(image, mask, method)  # type: ignore[arg-type]
    if restorer is None:
        raise ParameterError("Diffusion restoration needs a loaded denoiser.")
    return lambda image, mask: restorer.restore(image, mask, settings, seed, batch_size)


def detect_and_restore(
    fill: Fill, detect: Callable[[np.ndarray], np.ndarray], image: np.ndarray
) -> LoopResult:
    """Flag artifacts with ``detect``, ``fill`` only those pixels, and detect again.

    ``fill`` is any ``(image, mask) -> image`` (:func:`restoring` makes one).
    """
    flagged = detect(image)
    restored = fill(image, flagged)
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
