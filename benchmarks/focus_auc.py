"""Per-patch focus scores on real in-focus vs defocused patches: ROC-AUC of four scorers.

    .venv/bin/python benchmarks/focus_auc.py [--model default] [--classifier default]
        [--csv runs/focus_auc.csv] [--focuslite runs/focuslite/model.safetensors] [--retrain]
        [--steps 1500] [--seed 0]

Run from the project root (the segmenter config's source paths are relative to it). Measures how
well a single number per 128 x 128 patch separates real in-focus from real defocused patches:

- ``ours-map``: the shipped segmenter's focus score (mean blur probability over tissue);
- ``classifier``: 1 - the shipped blur-type classifier's probability of ``in_focus``;
- ``laplacian``: minus the variance of the Laplacian of the grey patch after a Gaussian of
  sigma 1 (HistoQC-style, no training); also its accuracy at a fixed rule (the patch is called
  blurred when most of it is at or below ``baseline.HISTOQC_THRESHOLD``, the smoothed-Laplacian
  threshold of :func:`histoblur.inference.baseline.histoqc_blur_mask`) and at the per-set
  oracle threshold of its score (the best accuracy: it sees the labels);
- ``focuslite``: a FocusLiteNN (148 parameters, :mod:`histoblur.models.focuslite`) trained here
  on the SAME synthetic data as the segmenter (``configs/segmenter/scale-aware.yaml``), target
  the blurred fraction of each synthetic tile; cached in ``--focuslite`` unless ``--retrain``.

Patches lie on a grid of stride 128 at 0.5 um/px (finer images are area-downsampled to it,
coarser ones kept); a position is kept where the in-focus image of its field has content (grey
std > 0.03; 16-bit images are first stretched to their 1st-99.9th percentile) and scored in
every plane of that field. Sets (label 0 in focus, 1 defocused):

- ``fqpath``: the FQPath pair, sharp.png (0) vs blurred.png (1), 0.25 um/px;
- ``smear``: focal stack planes 0, +-1 (0) vs |k| >= 5 (1), cropped to the common size;
- ``sephace``: unstained cells, dz 0 and -0.65 um (0) vs |dz| >= 9.75 um (1);
- ``urjc``: adipose-tissue stack at 1.3 um/px, plane +00 (0) vs planes 4 to 10 steps away (1);
- ``bbbc006``: 16-bit fluorescence nuclei, z10 near focus (0) vs defocus class -11 (1),
  unpaired (each image its own field); every scorer sees each image as its stretched negative
  (:func:`histoblur.inference.modality.as_bright_field`, what the detectors do to any dark-field
  image themselves), so the baselines get the same view as the shipped models;
- ``cmu1``: in-focus patches only (0) of cmu-1-small-region.svs (tissue fraction >= 0.5); it
  counts in the pooled AUC ``all`` and is reported as its mean score.

Honesty rules: the shipped classifier trains on the TOP halves of the labelled microscopy images,
so fqpath, smear, sephace and bbbc006 are scored on their BOTTOM halves only; urjc is scored only
in its held-out test region (x 0.6-1.0, y 0.5-1.0: the segmenter trains on its left 60 %);
cmu-1 is held out from every training. Prints one table (AUC per set, pooled AUC, its ratio to
FocusLiteNN's, and milliseconds per 1024 x 1024 px image: one call on a 1024 x 1024 crop of
cmu-1, median of 3 after a warm-up) and writes every per-patch score to ``--csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from histoblur.inference.baseline import HISTOQC_THRESHOLD, histoqc_blur_mask
from histoblur.inference.classify import BlurClassifier
from histoblur.inference.modality import as_bright_field
from histoblur.inference.resolution import to_working
from histoblur.inference.segment import Segmenter, to_network_input
from histoblur.io.images import read_image, to_gray_float
from histoblur.metrics.sharpness import variance_of_laplacian
from histoblur.models.focuslite import FocusLiteConfig, FocusLiteNN
from histoblur.models.registry import build_model
from histoblur.training.data import SegmentationBatches
from histoblur.training.segmenter import SegmenterTrainConfig
from histoblur.training.sources import prepare_sources
from histoblur.wsi.readers import open_slide
from histoblur.wsi.tissue import tissue_fraction

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SEGMENTER_CONFIG = Path("configs/segmenter/scale-aware.yaml")
PATCH = 128
WORKING_MPP = 0.5
MIN_STD = 0.03  # grey std (in [0, 1]) of a patch with content
MIN_TISSUE = 0.5  # tissue fraction of a cmu-1 patch
SETS = ("fqpath", "smear", "sephace", "urjc", "bbbc006", "cmu1")
Scorer = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Patch:
    """One scored patch: its set, source image, grid position (y, x), label and pixels."""

    set: str
    image: str
    position: tuple[int, int]
    label: int
    pixels: np.ndarray


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC by ranks (Mann-Whitney U, ties averaged); NaN without both classes."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    values, inverse = np.unique(scores, return_inverse=True)
    mean_rank = np.bincount(inverse, ranks) / np.bincount(inverse)  # ties averaged
    u = mean_rank[inverse][labels].sum() - pos * (pos + 1) / 2
    return float(u / (pos * neg))


def best_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the best threshold ``score > t`` means defocused (an oracle)."""
    cuts = np.concatenate([[-np.inf], np.unique(scores)])
    return max(float(((scores > t) == labels).mean()) for t in cuts)


def grey01(image: np.ndarray) -> np.ndarray:
    """Grey in [0, 1] for the content test; 16-bit images stretched to their 1-99.9th pct."""
    grey = to_gray_float(image)
    if image.dtype != np.uint16:
        return grey
    low, high = np.percentile(grey, (1, 99.9))
    return np.clip((grey - low) / max(high - low, 1e-6), 0, 1)


def grid(shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """Top-left corners of the whole 128 px patches on a stride-128 grid."""
    for y in range(0, shape[0] - PATCH + 1, PATCH):
        for x in range(0, shape[1] - PATCH + 1, PATCH):
            yield y, x


def cut(image: np.ndarray, y: int, x: int) -> np.ndarray:
    return np.ascontiguousarray(image[y : y + PATCH, x : x + PATCH])


def field(name: str, planes: list[tuple[str, np.ndarray, int]], reference: np.ndarray) -> list:
    """Patches of one field: positions where ``reference`` has content, in every plane."""
    grey = grey01(reference)
    keep = [p for p in grid(reference.shape) if cut(grey, *p).std() > MIN_STD]
    return [Patch(name, image, p, label, cut(px, *p)) for image, px, label in planes for p in keep]


def bottom(image: np.ndarray, mpp: float | None = None) -> np.ndarray:
    """The bottom half (unseen by the classifier), at the working resolution."""
    return to_working(image[image.shape[0] // 2 :], mpp, WORKING_MPP)


def fqpath() -> list[Patch]:
    pair = DATA / "real_pairs" / "fqpath_left"
    sharp, blurred = (bottom(read_image(pair / f"{n}.png"), 0.25) for n in ("sharp", "blurred"))
    return field("fqpath", [("sharp.png", sharp, 0), ("blurred.png", blurred, 1)], sharp)


def smear() -> list[Patch]:
    paths = {int(p.stem.split("_")[1]): p for p in (DATA / "focal_stacks" / "smear").glob("*.png")}
    images = {k: read_image(p) for k, p in paths.items() if abs(k) <= 1 or abs(k) >= 5}
    h = min(im.shape[0] for im in images.values())
    w = min(im.shape[1] for im in images.values())
    crop = {k: bottom(im[:h, :w]) for k, im in images.items()}
    planes = [(paths[k].name, im, int(abs(k) >= 5)) for k, im in sorted(crop.items())]
    return field("smear", planes, crop[0])


def sephace() -> list[Patch]:
    planes, reference = [], None
    for path in sorted((DATA / "focal_stacks" / "sephace_set1").glob("brightfield_*.png")):
        dz = float(re.search(r"dz([+-][\d.]+)um", path.name).group(1))
        image = bottom(read_image(path))
        if abs(dz) < 1 or abs(dz) >= 9.75:
            planes.append((path.name, image, int(abs(dz) >= 9.75)))
        reference = image if dz == 0 else reference
    return field("sephace", planes, reference)


def urjc() -> list[Patch]:
    planes, reference = [], None
    for path in sorted((DATA / "focal_stacks" / "urjc_s1").glob("plane_*.png")):
        k = int(path.stem.split("_")[1])
        if k != 0 and not 4 <= abs(k) <= 10:
            continue
        image = read_image(path)
        h, w = image.shape[:2]
        region = to_working(image[round(0.5 * h) :, round(0.6 * w) :], 1.3, WORKING_MPP)
        planes.append((path.name, region, int(k != 0)))
        reference = region if k == 0 else reference
    return field("urjc", planes, reference)


def bbbc006() -> list[Patch]:
    folder = DATA / "real_blur" / "bbbc006"
    with open(folder / "labels.csv", newline="") as f:
        labels = {r["file"]: int("defocus" in r["focus_label"]) for r in csv.DictReader(f)}
    out: list[Patch] = []
    for name, label in sorted(labels.items()):
        image = as_bright_field(bottom(read_image(folder / name)))
        out += field("bbbc006", [(name, image, label)], image)
    return out


def cmu1_image() -> np.ndarray:
    """cmu-1-small-region.svs, level 0, at the working resolution."""
    slide = open_slide(DATA / "wsi" / "cmu-1-small-region.svs")
    try:
        w, h = slide.level_dimensions[0]
        return to_working(slide.read_region(0, 0, 0, (w, h)), slide.mpp, WORKING_MPP)
    finally:
        slide.close()


def cmu1(image: np.ndarray) -> list[Patch]:
    return [
        Patch("cmu1", "cmu-1-small-region.svs", p, 0, cut(image, *p))
        for p in grid(image.shape)
        if tissue_fraction(cut(image, *p)) >= MIN_TISSUE
    ]


def train_focuslite(path: Path, steps: int, seed: int) -> FocusLiteNN:
    """Train on the segmenter's synthetic batches (target: blurred fraction) and save."""
    config = SegmenterTrainConfig(**yaml.safe_load(SEGMENTER_CONFIG.read_text()))
    sharp = prepare_sources(config.sources, config.working_mpp, Path("runs/focuslite/sources"))
    batches = SegmentationBatches(config.synthesis, config.augment, 16, seed, sharp_dir=sharp)
    torch.manual_seed(seed)
    net = FocusLiteNN(FocusLiteConfig()).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-4)
    start, running = time.perf_counter(), 0.0
    for step in range(steps):
        images, masks = batches.batch(step)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(images)[:, 0], masks.mean(dim=(1, 2, 3))
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % 100 == 0:
            print(f"  step {step + 1}/{steps}  loss {running:.4f}", flush=True)
    seconds = time.perf_counter() - start
    print(f"FocusLiteNN trained: {steps} steps of 16 in {seconds:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    meta = {"task": "focus-score", "model": net.config.model_dump(), "seed": seed,
            "training": {"steps": steps, "batch_size": 16, "lr": 1e-2, "seconds": seconds,
                         "data": str(SEGMENTER_CONFIG), "target": "blurred fraction"}}  # fmt: skip
    (path.parent / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return net.eval()


def load_focuslite(path: Path) -> FocusLiteNN:
    """The cached network: config.json beside safetensors weights."""
    meta = json.loads((path.parent / "config.json").read_text())
    net = build_model(meta["model"])
    net.load_state_dict(load_file(str(path)))
    print(f"FocusLiteNN loaded from {path} ({meta['training']['steps']} steps)")
    return net.eval()


def laplacian(patch: np.ndarray) -> float:
    """Minus the variance of the Laplacian after a Gaussian of sigma 1 (higher: blurrier)."""
    smooth = cv2.GaussianBlur(to_gray_float(patch), (0, 0), 1.0)
    return -float(variance_of_laplacian(smooth))


def histoqc_blurred(patch: np.ndarray) -> bool:
    """The fixed HistoQC-style rule: most of the patch is at or below its threshold."""
    return bool(histoqc_blur_mask(patch, threshold=HISTOQC_THRESHOLD).mean() > 0.5)


def scorers(args: argparse.Namespace, net: FocusLiteNN) -> dict[str, Scorer]:
    segmenter = Segmenter.load(args.model, tile=PATCH)
    classifier = BlurClassifier.load(args.classifier)

    @torch.no_grad()
    def focuslite(patch: np.ndarray) -> float:
        x = torch.from_numpy(to_network_input(patch).transpose(2, 0, 1).copy())[None]
        return float(torch.sigmoid(net(x)))

    return {
        "ours-map": segmenter.focus_score,
        "classifier": lambda p: 1.0 - classifier.classify(p).probabilities["in_focus"],
        "laplacian": laplacian,
        "focuslite": focuslite,
    }


def ms_per_image(score: Scorer, image: np.ndarray, repeats: int = 3) -> float:
    score(image)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        score(image)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="segmenter name or path")
    parser.add_argument("--classifier", default="default", help="classifier name or path")
    parser.add_argument("--csv", type=Path, default=Path("runs/focus_auc.csv"))
    parser.add_argument("--focuslite", type=Path, default=Path("runs/focuslite/model.safetensors"))
    parser.add_argument("--retrain", action="store_true", help="train even if cached")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    if args.focuslite.is_file() and not args.retrain:
        net = load_focuslite(args.focuslite)
    else:
        net = train_focuslite(args.focuslite, args.steps, args.seed)
    slide = cmu1_image()
    patches = fqpath() + smear() + sephace() + urjc() + bbbc006() + cmu1(slide)
    for name in SETS:
        n = [p.label for p in patches if p.set == name]
        print(f"{name}: {len(n)} patches ({n.count(0)} in focus, {n.count(1)} defocused)")
    h, w = slide.shape[:2]
    crop = np.ascontiguousarray(slide[(h - 1024) // 2 :][:1024, (w - 1024) // 2 :][:, :1024])

    scores: dict[str, np.ndarray] = {}
    ms: dict[str, float] = {}
    for name, score in scorers(args, net).items():
        start = time.perf_counter()
        scores[name] = np.array([score(p.pixels) for p in patches])
        ms[name] = ms_per_image(score, crop)
        print(f"scored with {name} in {time.perf_counter() - start:.0f} s", flush=True)

    labels = np.array([p.label for p in patches])
    sets = np.array([p.set for p in patches])
    labelled = [s for s in SETS if s != "cmu1"]
    ratio_to = roc_auc(scores["focuslite"], labels)
    head = ["scorer", *labelled, "all", "all / focuslite", "cmu1 mean", "ms / 1024^2 px"]
    rows = []
    for name, s in scores.items():
        aucs = [roc_auc(s[sets == k], labels[sets == k]) for k in labelled]
        pooled = roc_auc(s, labels)
        rows.append([name, *(f"{a:.3f}" for a in aucs), f"{pooled:.3f}",
                     f"{pooled / ratio_to:.2f}", f"{s[sets == 'cmu1'].mean():.4g}",
                     f"{ms[name]:.1f}"])  # fmt: skip
    lap = scores["laplacian"]
    fixed = np.array([histoqc_blurred(p.pixels) for p in patches])
    acc = {k: float((fixed[sets == k] == labels[sets == k]).mean()) for k in SETS}
    oracle = {k: best_accuracy(lap[sets == k], labels[sets == k]) for k in labelled}
    all_fixed, all_oracle = float((fixed == labels).mean()), best_accuracy(lap, labels)
    rows.append([f"laplacian acc, fixed (histoqc {HISTOQC_THRESHOLD})",
                 *(f"{acc[k]:.3f}" for k in labelled), f"{all_fixed:.3f}", "", f"{acc['cmu1']:.3f}",
                 ""])  # fmt: skip
    rows.append(["laplacian acc, oracle per set", *(f"{oracle[k]:.3f}" for k in labelled),
                 f"{all_oracle:.3f}", "", "-", ""])  # fmt: skip
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        "(AUC: higher = better separates defocused from in-focus; cmu1 has no defocused "
        "patches, so its column is the mean score, and the laplacian accuracy rows give the "
        "share called in focus there; the oracle row's 'all' is one threshold for all sets; ms: "
        "one call on a 1024 x 1024 px crop of cmu-1, median of 3)"
    )

    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["set", "image", "position", "label", "scorer", "score"])
        for name, s in scores.items():
            for p, value in zip(patches, s, strict=True):
                pos = f"{p.position[0]},{p.position[1]}"
                writer.writerow([p.set, p.image, pos, p.label, name, f"{value:.6g}"])
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
