import csv
import json

import numpy as np
import pytest

from histoblur.cli.main import main
from histoblur.io.images import write_image


def _square(top: int, left: int, size: int = 8, value: int = 255) -> np.ndarray:
    m = np.zeros((24, 24), np.uint8)
    m[top : top + size, left : left + size] = value
    return m


@pytest.fixture()
def folders(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    # a: perfect (prediction stored as 0/1, truth as 0/255, both binary)
    write_image(pred / "a_mask.png", _square(2, 2, value=1))
    write_image(truth / "a.png", _square(2, 2))
    # b: half overlap (32 of 64 px): Dice 0.5, IoU 1/3
    write_image(pred / "b.png", _square(10, 10))
    write_image(truth / "b_mask.png", _square(10, 14))
    # c: clean tile, nothing predicted: Dice 1 by convention
    write_image(pred / "c.png", np.zeros((24, 24), np.uint8))
    write_image(truth / "c.png", np.zeros((24, 24), np.uint8))
    write_image(pred / "orphan.png", _square(0, 0))  # no truth: reported, not scored
    return pred, truth


def test_segmentation_prints_and_writes_csv_and_json(folders, tmp_path, capsys):
    pred, truth = folders
    out = tmp_path / "report" / "scores.csv"
    rc = main(["evaluate", "segmentation", "--pred", str(pred), "--truth", str(truth),
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    assert "micro" in captured.out and "macro" in captured.out and "b" in captured.out
    assert "orphan.png" in captured.err
    rows = list(csv.DictReader(out.open()))
    assert [r["kind"] for r in rows] == ["image"] * 3 + ["micro", "macro"]
    per = {r["image"]: r for r in rows if r["kind"] == "image"}
    assert float(per["a"]["dice"]) == 1.0
    assert float(per["b"]["dice"]) == pytest.approx(0.5)
    assert float(per["b"]["iou"]) == pytest.approx(1 / 3, abs=1e-6)
    assert float(per["c"]["dice"]) == 1.0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["n_images"] == 3
    assert summary["micro"]["tp"] == 64 + 32 and summary["micro"]["fn"] == 32
    assert summary["micro"]["dice"] == pytest.approx(2 * 96 / (2 * 96 + 64))
    assert summary["macro"]["dice"] == pytest.approx(2.5 / 3)
    assert summary["unmatched_predictions"] == ["orphan.png"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_segmentation_without_out_writes_nothing(folders, tmp_path):
    pred, truth = folders
    before = sorted(tmp_path.rglob("*"))
    assert main(["evaluate", "segmentation", "--pred", str(pred), "--truth", str(truth)]) == 0
    assert sorted(tmp_path.rglob("*")) == before


def test_segmentation_threshold_for_probability_maps(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    prob = np.zeros((24, 24), np.uint8)
    prob[:, :12] = 200  # confident blur on the left half
    prob[:, 12:] = 60  # low probability on the right half
    write_image(pred / "t.png", prob)
    write_image(truth / "t.png", (prob == 200).astype(np.uint8) * 255)
    out = tmp_path / "s.csv"
    args = ["evaluate", "segmentation", "--pred", str(pred), "--truth", str(truth)]
    assert main([*args, "--threshold", "0.5", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["micro"]["dice"] == 1.0
    assert main([*args, "--out", str(out)]) == 1  # the scores exist: --overwrite to replace
    assert main([*args, "--out", str(out), "--overwrite"]) == 0  # non-zero rule: all blur
    assert json.loads(out.with_suffix(".json").read_text())["micro"]["dice"] == pytest.approx(
        2 * 288 / (576 + 288)
    )


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("no_pairs", "matches a truth mask"),
        ("size", "masks must have the size"),
        ("duplicate", "same image"),
        ("bad_out", "must end in .csv"),
        ("bad_threshold", "threshold"),
    ],
)
def test_segmentation_errors_exit_1(tmp_path, capsys, case, message):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    write_image(pred / "a.png", _square(0, 0))
    write_image(truth / ("z.png" if case == "no_pairs" else "a.png"), _square(0, 0))
    extra = []
    if case == "missing":
        pred = tmp_path / "nowhere"
    elif case == "size":
        write_image(truth / "a.png", np.zeros((20, 24), np.uint8))
    elif case == "duplicate":
        write_image(pred / "a_mask.png", _square(0, 0))
    elif case == "bad_out":
        extra = ["--out", str(tmp_path / "s.json")]
    elif case == "bad_threshold":
        extra = ["--threshold", "2"]
    rc = main(["evaluate", "segmentation", "--pred", str(pred), "--truth", str(truth), *extra])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("histoblur: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_evaluate_requires_a_sub_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate"])
    assert exc.value.code == 2
