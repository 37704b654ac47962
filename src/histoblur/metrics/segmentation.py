"""Segmentation metrics for blur masks: Dice, IoU, precision, recall, false-positive rate.

Masks are binary: any non-zero value is foreground (blur). Threshold probability maps first (or
use :func:`binarize_mask`). One numpy mask pair gives Python floats; torch tensors ``(N, ...)``
give one value per leading index.

A ratio whose denominator is zero follows one rule: it is 1 when the prediction and the truth
are both empty (nothing to find, nothing claimed: a perfect answer) and 0 otherwise. So
empty-vs-empty masks have Dice = IoU = precision = recall = 1. The false-positive rate is 0 when
the truth has no background pixel.

Folder evaluation pairs files by stem: a trailing ``_mask`` is removed from every file stem in
both folders, and files with the same remaining key are compared, so prediction ``a_mask.png``
or ``a.png`` matches truth ``a.png`` or ``a_mask.png`` (any supported image suffix).

Examples:
    >>> pred = np.zeros((8, 8), bool)
    >>> pred[:4] = True  # top half flagged
    >>> truth = np.zeros((8, 8), bool)
    >>> truth[2:6] = True  # middle rows blurred
    >>> confusion_counts(pred, truth)
    (16, 16, 16, 16)
    >>> dice(pred, truth), round(iou(pred, truth), 3)
    (0.5, 0.333)
    >>> dice(np.zeros((4, 4)), np.zeros((4, 4)))  # nothing to find, nothing claimed
    1.0
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from histoblur.errors import InputError, ParameterError
from histoblur.io.images import IMAGE_SUFFIXES, dtype_max, read_image

MaskLike = np.ndarray | torch.Tensor
MASK_SUFFIX = "_mask"
SCORE_NAMES = ("dice", "iou", "precision", "recall", "fpr")
COUNT_NAMES = ("tp", "fp", "fn", "tn")
PAIRING_RULE = (
    "files are paired by stem after removing a trailing '_mask' in both folders "
    "(prediction a_mask.png or a.png matches truth a.png or a_mask.png)"
)


def _check_masks(pred: MaskLike, truth: MaskLike) -> None:
    if isinstance(pred, np.ndarray) and isinstance(truth, np.ndarray):
        pass
    elif isinstance(pred, torch.Tensor) and isinstance(truth, torch.Tensor):
        if pred.ndim < 2:
            raise InputError(
                f"The predicted mask tensor has shape {tuple(pred.shape)}; expected (N, ...) with "
                "one mask per leading index."
            )
        if pred.device != truth.device:
            raise InputError(
                f"The predicted mask is on {pred.device} but the truth on {truth.device}; "
                "move them to the same device."
            )
    else:
        raise InputError(
            f"The predicted mask is a {type(pred).__name__} and the truth a "
            f"{type(truth).__name__}; pass two numpy arrays or two torch tensors."
        )
    if tuple(pred.shape) != tuple(truth.shape):
        raise InputError(
            f"The predicted mask has shape {tuple(pred.shape)} but the truth mask has shape "
            f"{tuple(truth.shape)}; compare masks of the same size."
        )


def confusion_counts(pred: MaskLike, truth: MaskLike) -> tuple[int, int, int, int] | torch.Tensor:
    """Pixel counts (true positive, false positive, false negative, true negative).

    Args:
        pred: predicted mask; non-zero is foreground.
        truth: ground-truth mask of the same shape.

    Returns:
        ``(tp, fp, fn, tn)`` as ints for numpy masks; a ``(N, 4)`` int64 tensor for torch masks
        ``(N, ...)``.

    Raises:
        InputError: if the masks differ in kind, shape or device.

    Examples:
        >>> pred = np.array([[1, 1, 0, 0]], np.uint8)
        >>> truth = np.array([[0, 1, 1, 0]], np.uint8)
        >>> confusion_counts(pred, truth)  # (tp, fp, fn, tn)
        (1, 1, 1, 1)
        >>> confusion_counts(torch.ones(2, 4, 4, dtype=torch.bool), torch.ones(2, 4, 4)).tolist()
        [[16, 0, 0, 0], [16, 0, 0, 0]]
    """
    _check_masks(pred, truth)
    if isinstance(pred, np.ndarray):
        p, t = pred != 0, truth != 0
        tp = int(np.count_nonzero(p & t))
        fp = int(np.count_nonzero(p & ~t))
        fn = int(np.count_nonzero(~p & t))
        return tp, fp, fn, int(p.size - tp - fp - fn)
    p = (pred != 0).reshape(pred.shape[0], -1)
    t = (truth != 0).reshape(truth.shape[0], -1)
    tp = (p & t).sum(dim=1)
    fp = (p & ~t).sum(dim=1)
    fn = (~p & t).sum(dim=1)
    tn = p.shape[1] - tp - fp - fn
    return torch.stack([tp, fp, fn, tn], dim=1)


def _ratio(num: torch.Tensor, den: torch.Tensor, both_empty: torch.Tensor) -> torch.Tensor:
    """``num / den``, and where ``den`` is 0: 1 if both masks are empty, else 0."""
    safe = torch.where(den > 0, den, torch.ones_like(den))
    fallback = both_empty.to(torch.float64)
    return torch.where(den > 0, num / safe, fallback)


def _scores(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """All ratios from a ``(N, 4)`` count tensor, in float64."""
    tp, fp, fn, tn = counts.to(torch.float64).unbind(dim=1)
    both_empty = (tp + fp + fn) == 0
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "iou": _ratio(tp, tp + fp + fn, both_empty),
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
        "fpr": _ratio(fp, fp + tn, torch.zeros_like(both_empty)),
    }


def _one_score(pred: MaskLike, truth: MaskLike, name: str) -> float | torch.Tensor:
    counts = confusion_counts(pred, truth)
    if isinstance(counts, tuple):
        return float(_scores(torch.tensor([counts]))[name][0])
    return _scores(counts)[name]


def dice(pred: MaskLike, truth: MaskLike) -> float | torch.Tensor:
    """Dice coefficient (F1 score of foreground pixels).

    ``Dice = 2|P and T| / (|P| + |T|)``; range [0, 1]; higher is better; 1 for two empty masks.

    Args:
        pred: predicted mask; non-zero is foreground.
        truth: ground-truth mask of the same shape.

    Returns:
        A float for numpy masks; a float64 tensor ``(N,)`` for torch masks ``(N, ...)``.

    Raises:
        InputError: if the masks differ in kind, shape or device.

    Examples:
        >>> pred = np.zeros((8, 8), bool)
        >>> pred[:4] = True
        >>> truth = np.zeros((8, 8), bool)
        >>> truth[2:6] = True
        >>> dice(pred, truth)
        0.5
        >>> batch_pred = torch.from_numpy(np.stack([pred, pred]))
        >>> dice(batch_pred, torch.from_numpy(np.stack([truth, pred])))
        tensor([0.5000, 1.0000], dtype=torch.float64)
    """
    return _one_score(pred, truth, "dice")


def iou(pred: MaskLike, truth: MaskLike) -> float | torch.Tensor:
    """Intersection over union (Jaccard index).

    ``IoU = |P and T| / |P or T|``; range [0, 1]; higher is better; 1 for two empty masks.
    ``IoU = Dice / (2 - Dice)`` for each image.

    Arguments, returns and errors: as :func:`dice`.

    Examples:
        >>> pred = np.zeros((8, 8), bool)
        >>> pred[:4] = True
        >>> truth = np.zeros((8, 8), bool)
        >>> truth[2:6] = True
        >>> round(iou(pred, truth), 3), round(dice(pred, truth) / (2 - dice(pred, truth)), 3)
        (0.333, 0.333)
    """
    return _one_score(pred, truth, "iou")


def binarize_mask(image: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Turn a mask image into a boolean array.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` mask; colour masks use the maximum over the first
            three channels (alpha is ignored).
        threshold: ``None`` makes every non-zero pixel foreground; a value in [0, 1) makes
            foreground the pixels above ``threshold`` times the dtype maximum (255 for uint8,
            65535 for uint16, 1 for float), for probability maps.

    Raises:
        ParameterError: for a threshold outside [0, 1).

    Examples:
        >>> probability = np.array([[0, 100, 200]], np.uint8)
        >>> binarize_mask(probability)
        array([[False,  True,  True]])
        >>> binarize_mask(probability, threshold=0.5)  # above 127.5
        array([[False, False,  True]])
    """
    if image.ndim == 3:
        image = image[..., :3].max(axis=2)
    if threshold is None:
        return image != 0
    if not 0.0 <= threshold < 1.0:
        raise ParameterError(f"The threshold must be in [0, 1), got {threshold}.")
    peak = dtype_max(image.dtype) if image.dtype.kind == "u" else 1.0
    return image > threshold * peak


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one image or of an aggregate; counts are ``None`` for the macro average."""

    name: str
    dice: float
    iou: float
    precision: float
    recall: float
    fpr: float
    tp: int | None = None
    fp: int | None = None
    fn: int | None = None
    tn: int | None = None

    def as_dict(self) -> dict[str, float | int | str | None]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


@dataclass(frozen=True)
class SegmentationSummary:
    """Per-image scores and their aggregates over a set.

    Attributes:
        per_image: one entry per mask pair, in input order.
        micro: scores of the pooled pixel counts (large masks weigh more).
        macro: mean of the per-image scores (every image weighs the same).

    Examples:
        >>> half = np.zeros((4, 4), bool)
        >>> half[:2] = True
        >>> summary = aggregate_segmentation({"a": (half, half), "b": (half, ~half)})
        >>> [row.dice for row in summary.per_image], summary.micro.dice, summary.macro.dice
        ([1.0, 0.0], 0.5, 0.5)
        >>> print(summary.to_csv().splitlines()[0])
        kind,image,dice,iou,precision,recall,fpr,tp,fp,fn,tn
        >>> summary.as_dict()["n_images"]
        2
    """

    per_image: tuple[SegmentationScores, ...]
    micro: SegmentationScores
    macro: SegmentationScores
    notes: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (aggregates, image count, notes; not the per-image rows)."""
        return {
            "n_images": len(self.per_image),
            "micro": self.micro.as_dict(),
            "macro": self.macro.as_dict(),
            "zero_denominator_rule": "1 when prediction and truth are both empty, else 0; "
            "fpr is 0 when the truth has no background",
            **self.notes,
        }

    def to_csv(self) -> str:
        """CSV text: one row per image, then the ``micro`` and ``macro`` rows (column ``kind``)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["kind", "image", *SCORE_NAMES, *COUNT_NAMES])
        rows = [("image", s) for s in self.per_image] + [
            ("micro", self.micro),
            ("macro", self.macro),
        ]
        for kind, s in rows:
            d = s.as_dict()
            writer.writerow(
                [
                    kind,
                    s.name if kind == "image" else "",
                    *(f"{d[k]:.6f}" for k in SCORE_NAMES),
                    *("" if d[k] is None else d[k] for k in COUNT_NAMES),
                ]
            )
        return buffer.getvalue()


def _scores_row(name: str, counts: torch.Tensor) -> SegmentationScores:
    values = {k: float(v[0]) for k, v in _scores(counts[None]).items()}
    tp, fp, fn, tn = (int(c) for c in counts)
    return SegmentationScores(name=name, tp=tp, fp=fp, fn=fn, tn=tn, **values)


def aggregate_segmentation(
    pairs: Iterable[tuple[MaskLike, MaskLike]] | Mapping[str, tuple[MaskLike, MaskLike]],
    names: Sequence[str] | None = None,
) -> SegmentationSummary:
    """Score every (prediction, truth) mask pair and aggregate over the set.

    Args:
        pairs: ``(pred, truth)`` mask pairs (one image each; a generator is fine, masks are not
            kept), or a mapping ``name -> (pred, truth)``.
        names: image names for a sequence of pairs; default ``"0"``, ``"1"``, ...

    Returns:
        Per-image scores with pixel counts, the micro aggregate (ratios of pooled counts) and
        the macro aggregate (mean of per-image ratios).

    Raises:
        InputError: if there is no pair or a pair differs in shape.

    Examples:
        >>> pred = np.zeros((8, 8), bool)
        >>> pred[:4] = True
        >>> truth = np.zeros((8, 8), bool)
        >>> truth[2:6] = True
        >>> summary = aggregate_segmentation([(pred, truth), (truth, truth)], names=["x", "y"])
        >>> [(s.name, s.dice, s.tp) for s in summary.per_image]
        [('x', 0.5, 16), ('y', 1.0, 32)]
        >>> round(summary.micro.dice, 3), round(summary.macro.dice, 3)  # pooled vs mean
        (0.75, 0.75)
    """
    if isinstance(pairs, Mapping):
        names, pairs = list(pairs.keys()), list(pairs.values())
    rows = []
    totals = torch.zeros(4, dtype=torch.int64)
    for index, (pred, truth) in enumerate(pairs):
        name = str(names[index]) if names is not None else str(index)
        if isinstance(pred, torch.Tensor):
            pred = pred.detach().cpu().numpy()
        if isinstance(truth, torch.Tensor):
            truth = truth.detach().cpu().numpy()
        try:
            counts = torch.tensor(confusion_counts(pred, truth), dtype=torch.int64)
        except InputError as exc:
            raise InputError(f"Image {name}: {exc}") from None
        totals += counts
        rows.append(_scores_row(name, counts))
    if not rows:
        raise InputError("There is no mask pair to evaluate.")
    macro = {k: float(np.mean([getattr(r, k) for r in rows])) for k in SCORE_NAMES}
    return SegmentationSummary(
        per_image=tuple(rows),
        micro=_scores_row("micro", totals),
        macro=SegmentationScores(name="macro", **macro),
    )


def mask_key(path: Path) -> str:
    """Pairing key of a mask file: its stem without a trailing ``_mask``.

    >>> mask_key(Path("out/slide1_mask.png")), mask_key(Path("truth/slide1.tif"))
    ('slide1', 'slide1')
    """
    stem = path.stem
    return stem[: -len(MASK_SUFFIX)] if stem.endswith(MASK_SUFFIX) else stem


@dataclass(frozen=True)
class MaskPairing:
    """Result of pairing two folders of masks by :func:`mask_key`."""

    pred_dir: Path
    truth_dir: Path
    pairs: tuple[tuple[str, Path, Path], ...]
    unmatched_pred: tuple[Path, ...]
    unmatched_truth: tuple[Path, ...]


def _keyed_files(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"The {role} folder {folder} does not exist.")
    keyed: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        key = mask_key(path)
        if key in keyed:
            raise InputError(
                f"The {role} folder holds both {keyed[key].name} and {path.name}, which pair with "
                "the same image; keep one of them."
            )
        keyed[key] = path
    if not keyed:
        raise InputError(
            f"The {role} folder {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})."
        )
    return keyed


def pair_mask_files(pred_dir: str | Path, truth_dir: str | Path) -> MaskPairing:
    """Pair prediction and truth mask files by stem (see the module docstring for the rule).

    Raises:
        InputError: if a folder is missing or empty, two files in one folder share a key, or no
            prediction matches a truth mask.

    Examples:
        >>> import tempfile
        >>> from histoblur.io.images import write_image
        >>> mask = np.zeros((8, 8), np.uint8)
        >>> mask[:4] = 255
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     pred, truth = Path(tmp) / "pred", Path(tmp) / "truth"
        ...     pred.mkdir()
        ...     truth.mkdir()
        ...     _ = write_image(pred / "a_mask.png", mask)
        ...     _ = write_image(truth / "a.png", mask)
        ...     _ = write_image(truth / "b.png", mask)
        ...     pairing = pair_mask_files(pred, truth)
        >>> [key for key, _, _ in pairing.pairs], [p.name for p in pairing.unmatched_truth]
        (['a'], ['b.png'])
    """
    pred = _keyed_files(Path(pred_dir), "prediction")
    truth = _keyed_files(Path(truth_dir), "truth")
    keys = sorted(pred.keys() & truth.keys())
    if not keys:
        raise InputError(
            f"No prediction in {pred_dir} matches a truth mask in {truth_dir}: {PAIRING_RULE}."
        )
    return MaskPairing(
        pred_dir=Path(pred_dir),
        truth_dir=Path(truth_dir),
        pairs=tuple((k, pred[k], truth[k]) for k in keys),
        unmatched_pred=tuple(pred[k] for k in sorted(pred.keys() - truth.keys())),
        unmatched_truth=tuple(truth[k] for k in sorted(truth.keys() - pred.keys())),
    )


def evaluate_mask_pairs(
    pairing: MaskPairing,
    threshold: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> SegmentationSummary:
    """Score paired mask files (from :func:`pair_mask_files`), one pair in memory at a time.

    Args:
        pairing: the paired files.
        threshold: ``None`` binarises predictions at non-zero; a value in [0, 1) keeps the
            pixels above ``threshold`` times the dtype maximum (probability maps). Truth masks
            are always binarised at non-zero.
        progress: called with 1 after each pair.

    Returns:
        The summary; its ``notes`` hold the folders, threshold, pairing rule and unmatched files.

    Raises:
        InputError: for an unreadable file or a size mismatch.
        ParameterError: for a threshold outside [0, 1).

    Examples:
        Probability maps (0-255) scored at a threshold of one half:

        >>> import tempfile
        >>> from histoblur.io.images import write_image
        >>> probability = np.tile(np.array([0, 100, 200, 250], np.uint8), (4, 1))
        >>> truth = np.tile(np.array([0, 0, 255, 255], np.uint8), (4, 1))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for folder, image in (("pred", probability), ("truth", truth)):
        ...         (Path(tmp) / folder).mkdir()
        ...         _ = write_image(Path(tmp) / folder / "a.png", image)
        ...     pairing = pair_mask_files(Path(tmp) / "pred", Path(tmp) / "truth")
        ...     at_half = evaluate_mask_pairs(pairing, threshold=0.5)
        ...     nonzero = evaluate_mask_pairs(pairing)
        >>> at_half.micro.dice, round(nonzero.micro.dice, 3)
        (1.0, 0.8)
    """
    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise ParameterError(f"The threshold must be in [0, 1), got {threshold}.")

    def masks() -> Iterable[tuple[np.ndarray, np.ndarray]]:
        for _, pred_path, truth_path in pairing.pairs:
            pred = binarize_mask(read_image(pred_path), threshold)
            truth = binarize_mask(read_image(truth_path))
            if pred.shape != truth.shape:
                raise InputError(
                    f"Prediction {pred_path.name} is {pred.shape[1]} x {pred.shape[0]} px but "
                    f"truth {truth_path.name} is {truth.shape[1]} x {truth.shape[0]} px; "
                    "masks must have the size of their image."
                )
            yield pred, truth
            if progress is not None:
                progress(1)

    summary = aggregate_segmentation(masks(), names=[k for k, _, _ in pairing.pairs])
    notes = {
        "pred_dir": str(pairing.pred_dir),
        "truth_dir": str(pairing.truth_dir),
        "threshold": threshold,
        "binarisation": "non-zero" if threshold is None else f"> {threshold} x dtype max",
        "pairing": PAIRING_RULE,
        "unmatched_predictions": [p.name for p in pairing.unmatched_pred],
        "unmatched_truths": [p.name for p in pairing.unmatched_truth],
    }
    return SegmentationSummary(summary.per_image, summary.micro, summary.macro, notes)


def evaluate_mask_folders(
    pred_dir: str | Path,
    truth_dir: str | Path,
    threshold: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> SegmentationSummary:
    """Score predicted blur masks against ground truth, folder against folder.

    Pairs the files with :func:`pair_mask_files` and scores them with
    :func:`evaluate_mask_pairs` (see both for the arguments).

    Raises:
        InputError: for a missing folder, no matching pair, an unreadable file or a size mismatch.
        ParameterError: for a threshold outside [0, 1).

    Examples:
        >>> import tempfile
        >>> from histoblur.io.images import write_image
        >>> half = np.zeros((8, 8), np.uint8)
        >>> half[:4] = 255
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for folder, name in (("pred", "a_mask.png"), ("truth", "a.png")):
        ...         (Path(tmp) / folder).mkdir()
        ...         _ = write_image(Path(tmp) / folder / name, half)
        ...     summary = evaluate_mask_folders(Path(tmp) / "pred", Path(tmp) / "truth")
        >>> len(summary.per_image), summary.micro.dice, summary.notes["binarisation"]
        (1, 1.0, 'non-zero')
    """
    if threshold is not None and not 0.0 <= threshold < 1.0:
        raise ParameterError(f"The threshold must be in [0, 1), got {threshold}.")
    return evaluate_mask_pairs(pair_mask_files(pred_dir, truth_dir), threshold, progress)
