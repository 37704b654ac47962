import json

import numpy as np

from histoblur.cli.main import main
from histoblur.demo import demo_rows
from histoblur.inference.baseline import laplacian_blur_mask
from histoblur.io.report import HtmlReport, heatmap, outline
from histoblur.synthesis import BLUR_KINDS


def test_demo_rows_cover_every_kind_and_show_blur(ihc):
    rows = demo_rows(ihc[:128, :128], seed=0)
    assert [r["kind"] for r in rows] == list(BLUR_KINDS)
    for r in rows:
        assert r["variance_of_laplacian_ratio"] < 1.0  # blurred is less sharp than sharp
        assert 0 <= r["baseline_dice"] <= 1 and 0 < r["ssim"] < 1
        assert 0 <= r["model_dice"] <= 1 and 0 <= r["model_iou"] <= r["model_dice"]


def test_cli_demo_writes_a_report_with_pictures(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert page.count("<img src='data:image/png;base64,") >= 5 * len(BLUR_KINDS)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) == len(BLUR_KINDS)
    assert (out / "images" / "lens_mask.png").exists()
    assert (out / "images" / "lens_model_mask.png").exists()
    # the shipped segmenter finds most of the pasted blur
    assert np.mean([r["model_dice"] for r in metrics]) > 0.5
    assert "Blur type and deblurring" in page and "DL_motion then DL_defocus" in page
    assert main(["demo", "--out", str(out)]) == 0  # re-running replaces the earlier demo


def test_demo_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path)]) == 1
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_report_helpers(tmp_path, tile):
    mask = np.zeros(tile.shape[:2], bool)
    mask[10:40, 20:60] = True
    report = HtmlReport("t")
    report.heading("h")
    report.table(["a", "b"], [["x", 0.123456]])
    report.figures(
        [("o", outline(tile, mask)), ("m", heatmap(np.random.default_rng(0).random((8, 8))))]
    )
    html = report.write(tmp_path / "r.html").read_text()
    assert "0.1235" in html and html.count("<figure>") == 2


def test_laplacian_baseline_finds_strong_blur(tile):
    import cv2

    blurred = cv2.GaussianBlur(tile, (0, 0), 4)
    image = tile.copy()
    image[:, :64] = blurred[:, :64]
    pred = laplacian_blur_mask(image, window=15)
    assert pred[:, 8:56].mean() > 0.7 and pred[:, 72:120].mean() < 0.3


def test_demo_deblur_step_classifies_every_case():
    from histoblur.demo import DEBLUR_CASES, demo_deblur, embedded_image

    rows = demo_deblur(embedded_image())
    assert [r["case"] for r in rows] == [c[0] for c in DEBLUR_CASES]
    in_focus = rows[0]
    assert in_focus["label"] == "in_focus" and in_focus["networks"].startswith("none")
    assert rows[2]["label"] == "motion"  # a strong 20 px motion blur
    for r in rows:
        assert abs(sum(v for k, v in r.items() if k.startswith("p_")) - 1) < 0.01
