"""Latent-space interpolation on real focal stacks: the paper's Tables 1 and 2 with our numbers.

    python benchmarks/latent_interpolation.py --config configs/latent/weak.yaml \
        --model baseline=runs/latent/baseline/best --model weak=runs/latent/weak/best \
        --model strong=runs/latent/strong/best [--compare weak] [--pictures docs/images]

Everything is measured on the held-out crops (the right ``test_fraction`` of every plane, never
trained on) of the stacks the config names, for each model:

- blur synthesis (Table 1): for every triplet (sharper x1, middle x3, blurrier x2), the decoded
  interpolation ``G(z'3)`` against ``G(E(x3))``: FFL (x1e4), Frechet distance (FD) on the
  blur-type classifier's penultimate features, PSNR-blur; and against the real x3:
  PSNR_blur-quality;
- deblurring (Table 1): on every axis, the in-focus plane extrapolated (eq. 3) from the planes
  ``span / 2`` and ``span`` steps away (span = 8 for the smear and the scorpion sweep, 2 for
  the unstained cells): PSNR-deblur against ``G(E(x_focus))`` and PSNR_deblur-quality against
  the real in-focus plane, beside the PSNR of the near plane itself (doing nothing);
- latent geometry (Table 2): LDS and APD of the codes of every plane along each axis;
- ``--compare NAME``: which synthesis is closest to the real middle plane, per stack: that
  model's interpolation, the Gaussian and lens PSFs and the best of the five families that
  ``histoblur calibrate`` fits on the training part of (x1, x3) (the calibrated kind), a pixel
  blend of x1 and x2, and x1 unchanged;
- ``--pictures DIR``: a transition strip, a deblurring panel and the PCA plot of the codes along
  the focal axis with their linear trajectory (the paper's Fig. 5).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from histoblur.calibration.config import CalibrationConfig  # noqa: E402
from histoblur.calibration.fit import calibrate  # noqa: E402
from histoblur.inference.classify import BlurClassifier  # noqa: E402
from histoblur.inference.latent import FocalCodec, anchored, sweep_strip  # noqa: E402
from histoblur.io.images import write_image  # noqa: E402
from histoblur.metrics.frechet import frechet_distance  # noqa: E402
from histoblur.metrics.full_reference import focal_frequency_loss, ssim  # noqa: E402
from histoblur.metrics.latent import (  # noqa: E402
    average_pairwise_distance,
    linear_dependence_score,
    linear_path,
)
from histoblur.models.autoencoder import extrapolate, flatten, mix  # noqa: E402
from histoblur.training.focal import FocalStack, load_stack, test_boxes, to_tensor  # noqa: E402
from histoblur.training.latent import LatentTrainConfig, pooled_psnr  # noqa: E402

TILE, CROPS = 128, 16


def planes_at(stack: FocalStack, index: int, boxes: list[tuple[int, int]]) -> torch.Tensor:
    """Held-out crops of one plane as a float batch."""
    return to_tensor([stack.planes[index][y : y + TILE, x : x + TILE] for y, x in boxes])


def deblur_planes(stack: FocalStack, axis: list[int]) -> tuple[int, int, int, float]:
    """(focus, near, far, alpha) of an axis: near and far ``span / 2`` and ``span`` away."""
    span = 2 ** int(np.log2(len(axis) - 1))
    focus, near, far = axis[0], axis[span // 2], axis[span]
    return focus, near, far, stack.distance(near, axis) / stack.distance(far, axis)


@torch.no_grad()
def score_model(codec: FocalCodec, stack: FocalStack, boxes, embedder) -> dict[str, float]:
    """Table 1 and Table 2 figures of one model on one stack's held-out crops."""
    model = codec.model
    codes = {}  # plane index -> code of its held-out crops
    images = {}

    def code(index: int):
        if index not in codes:
            images[index] = planes_at(stack, index, boxes)
            codes[index] = model.encode(images[index])
        return codes[index]

    synth, target, real = [], [], []
    for t in stack.triplets():
        synth.append(model.decode(mix(code(t.sharp), code(t.blurry), t.alpha)))
        target.append(model.decode(code(t.middle)))
        real.append(images[t.middle])
    synth_t, target_t, real_t = torch.cat(synth), torch.cat(target), torch.cat(real)
    out = {
        "ffl": float(focal_frequency_loss(target_t, synth_t).mean()) * 1e4,
        "fd": frechet_distance(embedder(synth_t), embedder(target_t)),
        "psnr_blur": pooled_psnr(synth_t, target_t),
        "psnr_blur_quality": pooled_psnr(synth_t, real_t),
    }
    deblurred, recon, focus_real, near_real = [], [], [], []
    for axis in stack.axes:
        focus, near, far, alpha = deblur_planes(stack, axis)
        deblurred.append(model.decode(extrapolate(code(near), code(far), alpha)))
        recon.append(model.decode(code(focus)))
        focus_real.append(images[focus])
        near_real.append(images[near])
    d, r, f, n = (torch.cat(v) for v in (deblurred, recon, focus_real, near_real))
    out |= {
        "psnr_deblur": pooled_psnr(d, r),
        "psnr_deblur_quality": pooled_psnr(d, f),
        "psnr_near_plane": pooled_psnr(n, f),
    }
    lds, apd = [], []
    for axis in stack.axes:
        positions = [stack.distance(i, axis) for i in axis]
        per_plane = np.stack([flatten(code(i)).numpy() for i in axis], axis=1)  # crops, planes, D
        for sequence in per_plane:
            path = linear_path(sequence, positions)
            lds.append(linear_dependence_score(sequence, path))
            apd.append(average_pairwise_distance(sequence, path))
    return out | {"lds": float(np.mean(lds)), "apd": float(np.mean(apd))}


def calibrated_kernels(stack: FocalStack, sharp: int, middle: int) -> dict[str, tuple]:
    """PSFs (and affine maps) fitted by ``histoblur calibrate`` on the training columns."""
    a = stack.planes[sharp][:, : stack.test_x]
    b = stack.planes[middle][:, : stack.test_x]
    result = calibrate(a, b, CalibrationConfig(max_size=256, freeform=False))
    out = {}
    for label, family in (("gaussian PSF", "gaussian"), ("lens PSF", "lens"),
                          ("calibrated PSF (best family)", result.best_family)):  # fmt: skip
        fit = result.fit(family)
        gain = np.asarray(fit.gain, np.float32)
        out[label] = (fit.kernel, gain, np.asarray(fit.offset, np.float32))
    return out


def apply_fit(batch: torch.Tensor, fit: tuple) -> torch.Tensor:
    kernel, gain, offset = fit
    images = batch.numpy().transpose(0, 2, 3, 1)
    out = [
        cv2.filter2D(im, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT) * gain
        + offset
        for im in images
    ]
    clipped = np.clip(np.stack(out), 0, 1).astype(np.float32)
    return torch.from_numpy(clipped.transpose(0, 3, 1, 2).copy())


def compare_synthesis(
    codec: FocalCodec, stack: FocalStack, boxes
) -> dict[str, tuple[float, float]]:
    """PSNR and SSIM to the real middle plane of every synthesis, over the stack's triplets."""
    scores: dict[str, list[tuple[float, float]]] = {}
    for t in stack.triplets():
        x1, x3, x2 = (planes_at(stack, i, boxes) for i in (t.sharp, t.middle, t.blurry))
        with torch.no_grad():
            z1, z2 = codec.model.encode(x1), codec.model.encode(x2)
            latent = codec.model.decode(mix(z1, z2, t.alpha))
            ends = (1 - t.alpha) * codec.model.decode(z1) + t.alpha * codec.model.decode(z2)
        blend = (1 - t.alpha) * x1 + t.alpha * x2
        made = {
            "latent interpolation": latent,
            "latent interpolation, residual (--residual)": anchored(latent, blend, ends).clamp(
                0, 1
            ),
            "pixel blend of x1 and x2": blend,
            "x1 unchanged": x1,
        }
        for label, fit in calibrated_kernels(stack, t.sharp, t.middle).items():
            made[label] = apply_fit(x1, fit)
        for label, image in made.items():
            pair = (pooled_psnr(image, x3), float(ssim(image, x3, data_range=1.0).mean()))
            scores.setdefault(label, []).append(pair)
    return {label: tuple(np.mean(v, axis=0)) for label, v in scores.items()}


def pca_plot(codecs: dict[str, FocalCodec], stack: FocalStack, box, out: Path) -> None:
    """2-D PCA of the codes along the first axis, with the straight line between its ends."""
    axis = stack.axes[0]
    fig, axes = plt.subplots(1, len(codecs), figsize=(4 * len(codecs), 3.6))
    for ax, (name, codec) in zip(np.atleast_1d(axes), codecs.items(), strict=True):
        with torch.no_grad():
            z = np.concatenate([flatten(codec.model.encode(planes_at(stack, i, [box]))).numpy()
                                for i in axis])  # fmt: skip
        centred = z - z.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        p = centred @ vt[:2].T
        ax.plot(p[[0, -1], 0], p[[0, -1], 1], "--", color="0.5", label="linear trajectory")
        ax.scatter(p[:, 0], p[:, 1], c=range(len(axis)), cmap="viridis", zorder=3)
        for k, (px, py) in enumerate(p):
            ax.annotate(str(k), (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{stack.name}: codes of planes 0 (focus) .. {len(axis) - 1} steps away")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def pictures(codecs: dict[str, FocalCodec], stack: FocalStack, box, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    y, x = box  # the stack is registered already: run the network on aligned crops directly

    def crop(index: int) -> np.ndarray:
        return stack.planes[index][y : y + 2 * TILE, x : x + TILE]

    def decoded(codec: FocalCodec, a: int, b: int, alphas: list[float], combine) -> list:
        with torch.no_grad():
            za, zb = (codec.model.encode(to_tensor([crop(i)])) for i in (a, b))
            outs = [codec.model.decode(combine(za, zb, t))[0] for t in alphas]
        return [(o.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for o in outs]

    axis = stack.axes[0]
    rows = []
    alphas = [0, 0.25, 0.5, 0.75, 1.0]
    real = [crop(axis[int(a * 8)]) for a in alphas]
    rows.append(sweep_strip(real, [f"real plane {int(a * 8)}" for a in alphas]))
    for name, codec in codecs.items():
        made = decoded(codec, axis[0], axis[8], alphas, mix)
        rows.append(sweep_strip(made, [f"{name} a={a:.2f}" for a in alphas]))
    write_image(out_dir / "latent_transition.png", np.vstack(rows))
    focus, near, far, alpha = deblur_planes(stack, axis)
    tiles = [crop(near), crop(far)]
    labels = ["near (plane 4)", "far (plane 8)"]
    for name, codec in codecs.items():
        tiles += decoded(codec, near, far, [alpha], extrapolate)
        labels.append(f"{name} deblurred")
    tiles.append(crop(focus))
    labels.append("real in-focus")
    write_image(out_dir / "latent_deblur.png", sweep_strip(tiles, labels))
    pca_plot(codecs, stack, box, out_dir / "latent_pca.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="a latent training config")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--compare", metavar="NAME", help="model for the synthesis comparison")
    parser.add_argument("--pictures", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = LatentTrainConfig.model_validate(yaml.safe_load(args.config.read_text()))
    stacks = [load_stack(s) for s in config.stacks]
    boxes = {s.name: test_boxes(s, TILE, CROPS) for s in stacks}
    codecs = dict(
        (name, FocalCodec.load(path)) for name, path in (m.split("=", 1) for m in args.model)
    )
    classifier = BlurClassifier.load("default").model

    def embedder(batch: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return classifier.embed(batch).numpy()

    for stack in stacks:
        sizes = [len(a) for a in stack.axes]
        print(f"\n### {stack.name}: {len(boxes[stack.name])} held-out crops of {TILE} px, "
              f"{len(stack.triplets())} triplets, axes of {sizes} planes\n")  # fmt: skip
        results = {
            name: score_model(codec, stack, boxes[stack.name], embedder)
            for name, codec in codecs.items()
        }
        keys = ["ffl", "fd", "psnr_blur", "psnr_blur_quality", "psnr_deblur",
                "psnr_deblur_quality", "psnr_near_plane", "lds", "apd"]  # fmt: skip
        print("| measure | " + " | ".join(results) + " |")
        print("|---|" + "---|" * len(results))
        for key in keys:
            cells = " | ".join(f"{r[key]:.4g}" for r in results.values())
            print(f"| {key} | {cells} |")
        if args.compare:
            table = compare_synthesis(codecs[args.compare], stack, boxes[stack.name])
            print(f"\nclosest to the real middle plane ({stack.name}):\n")
            print("| synthesis | PSNR | SSIM |\n|---|---|---|")
            for label, (p, s) in sorted(table.items(), key=lambda kv: -kv[1][0]):
                print(f"| {label} | {p:.2f} | {s:.3f} |")
    if args.pictures is not None:
        smear = stacks[0]
        y, x = boxes[smear.name][0]
        box = (min(y, smear.planes[0].shape[0] - 2 * TILE), smear.planes[0].shape[1] - TILE)
        pictures(codecs, smear, box, args.pictures)


if __name__ == "__main__":
    main()
