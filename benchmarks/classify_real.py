"""The blur-type classifier on real images with known blur, one row per image.

    .venv/bin/python benchmarks/classify_real.py [--model default] [--csv runs/classify_real.csv]
    .venv/bin/python benchmarks/classify_real.py --segmenter default   # as histoblur classify

Expected labels: the FQPath pair (sharp side in focus, blurred side defocus); BBBC006 nuclei at
defocus class -11 (defocus); the out-of-focus Leishmania picture (defocus); scikit-image's real
camera-motion clock (motion); focal stacks: the smear's planes 0 and +-1 in focus and +-5..9
defocus, the unstained cells at 0 and -0.65 um in focus and +-9.75..24.65 um defocus. BBBC006
near-focus images (z10) and the smear's planes +-2..4 are shown without an expected label.
The shipped classifier trains on the top halves of the labelled microscopy images
(``configs/classifier/default.yaml``), so every image is scored on its bottom half only; the
clock is never trained on. Prints the table, the confusion matrix and the accuracy over the
labelled images.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np

from histoblur.inference.classify import BlurClassifier
from histoblur.inference.focus import FocusModel
from histoblur.io.images import read_image
from histoblur.models.classifier import BLUR_TYPES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def expected_labels() -> list[tuple[str, Path, str | None]]:
    """(group, image, expected label or None) for every real image used."""
    rows: list[tuple[str, Path, str | None]] = []
    pair = DATA / "real_pairs" / "fqpath_left"
    rows += [
        ("fqpath", pair / "sharp.png", "in_focus"),
        ("fqpath", pair / "blurred.png", "defocus"),
    ]
    for path in sorted((DATA / "real_blur" / "bbbc006").glob("*.png")):
        rows.append(("bbbc006", path, "defocus" if "defocus" in path.name else None))
    rows.append(("comi", DATA / "real_blur" / "comi_leishmania_out_of_focus.jpg", "defocus"))
    rows.append(("clock", DATA / "real_blur" / "skimage_clock_motion.png", "motion"))
    for path in sorted((DATA / "focal_stacks" / "smear").glob("plane_*.png")):
        z = abs(int(path.stem.split("_")[1]))
        rows.append(("smear", path, "in_focus" if z <= 1 else "defocus" if z >= 5 else None))
    for path in sorted((DATA / "focal_stacks" / "sephace_set1").glob("brightfield_*.png")):
        z = abs(float(re.search(r"dz([+-][\d.]+)um", path.name).group(1)))
        rows.append(("sephace", path, "in_focus" if z < 1 else "defocus"))
    return [r for r in rows if r[1].is_file()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--segmenter",
        default=None,
        help="judge with the segmenter's pooled map and the classifier together (FocusModel, "
        "as histoblur classify does); default: the classifier alone",
    )
    args = parser.parse_args()
    if args.segmenter:
        model = FocusModel.load(args.segmenter, args.model)
        judge = lambda image: model.judge(image).blur_type  # noqa: E731
    else:
        judge = BlurClassifier.load(args.model).classify
    table = []
    for group, path, expected in expected_labels():
        image = read_image(path)
        result = judge(image[image.shape[0] // 2 :])  # the unseen bottom half
        table.append({"group": group, "image": path.name, "expected": expected or "",
                      **result.row()})  # fmt: skip
    print("| group | image | expected | label | " + " | ".join(f"p_{c}" for c in BLUR_TYPES) + " |")
    print("|---|---|---|---|" + "---|" * len(BLUR_TYPES))
    for r in table:
        mark = "" if not r["expected"] or r["expected"] == r["label"] else " (wrong)"
        probs = " | ".join(f"{r[f'p_{c}']:.3f}" for c in BLUR_TYPES)
        head = f"| {r['group']} | {r['image']} | {r['expected'] or '-'} | {r['label']}{mark}"
        print(f"{head} | {probs} |")
    k = len(BLUR_TYPES)
    labelled = [r for r in table if r["expected"]]
    matrix = np.zeros((k, k), int)
    for r in labelled:
        matrix[BLUR_TYPES.index(r["expected"]), BLUR_TYPES.index(r["label"])] += 1
    print("\nconfusion (rows: expected, columns: predicted)")
    print("| | " + " | ".join(BLUR_TYPES) + " |")
    print("|---|" + "---|" * k)
    for i, name in enumerate(BLUR_TYPES):
        print(f"| {name} | " + " | ".join(str(v) for v in matrix[i]) + " |")
    correct = int(np.trace(matrix))
    print(f"\n{correct} of {len(labelled)} labelled real images correct "
          f"({correct / max(1, len(labelled)):.1%})")  # fmt: skip
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, list(table[0]))
            writer.writeheader()
            writer.writerows(table)


if __name__ == "__main__":
    main()
