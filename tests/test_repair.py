"""The QC repair loop (histoblur qc --repair, histoblur.inference.repair)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from histoblur.cli.main import main
from histoblur.inference.repair import RepairConfig, flagged_regions
from histoblur.io.images import read_image, read_mask, write_image


@pytest.fixture()
def blurred_slide(ihc, tmp_path):
    """A 512 px IHC 'slide' (PNG) with a strongly blurred ellipse, and that ellipse."""
    region = np.zeros(ihc.shape[:2], np.uint8)
    cv2.ellipse(region, (300, 260), (110, 80), 30, 0, 360, 1, -1)
    region = region.astype(bool)
    image = ihc.copy()
    image[region] = cv2.GaussianBlur(ihc, (0, 0), 5)[region]
    return write_image(tmp_path / "slides" / "scan.png", image), image, region


def test_qc_repair_changes_only_flagged_pixels_and_reports_before_after(blurred_slide, tmp_path):
    path, image, truth = blurred_slide
    original = path.read_bytes()
    out = tmp_path / "qc"
    assert main(["qc", str(path), "--slide-mpp", "0.5", "--out", str(out), "--repair"]) == 0
    folder = out / "scan" / "repair"
    rows = list(csv.DictReader((folder / "repair.csv").open()))
    assert rows and path.read_bytes() == original  # the slide is never changed
    for row in rows:
        before = read_image(folder / f"{row['region']}_before.png")
        after = read_image(folder / f"{row['region']}.png")
        region = read_mask(folder / f"{row['region']}_mask.png")
        assert (after[~region] == before[~region]).all()
        if row["outcome"] == "repaired":  # QC flags no more of it than before
            assert float(row["blurred_after"]) <= float(row["blurred_before"])
            assert (after[region] != before[region]).any()
        else:  # reverted: the slide's own pixels, the attempt beside them
            assert row["outcome"] == "reverted" and (after == before).all()
            attempt = read_image(folder / f"{row['region']}_attempt.png")
            assert (attempt[~region] == before[~region]).all()
        x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
        assert (before == image[y : y + h, x : x + w]).all()  # the slide's own pixels
        assert 0 <= float(row["blurred_after"]) <= 1 and float(row["blurred_before"]) > 0.5
        assert row["blur_type"] in ("defocus", "motion", "mixed")
    first = read_mask(folder / "region_001_mask.png")
    x, y, w, h = (int(rows[0][k]) for k in ("x", "y", "width", "height"))
    assert (first & truth[y : y + h, x : x + w]).sum() > 0.5 * first.sum()  # it is the ellipse
    assert "region_001_pair.jpg" in (folder / "repair.html").read_text()


def test_flagged_regions_take_the_largest_and_cut_big_ones_to_max_side():
    mask = np.zeros((400, 400), bool)
    mask[10:390, 20:380] = True  # one region wider than max_side
    mask[395:399, 0:4] = True  # too small
    regions = flagged_regions(mask, 50, RepairConfig(max_side=128, max_regions=5))
    assert len(regions) == 1
    (x, y, w, h), inside = regions[0]
    assert (w, h) == (128, 128) and inside.shape == (128, 128) and inside.all()
    assert flagged_regions(mask, 10**6, RepairConfig()) == []


def test_qc_refuses_a_bad_repair_region_count(blurred_slide, tmp_path, capsys):
    path, _, _ = blurred_slide
    out = tmp_path / "qc"
    assert main(["qc", str(path), "--out", str(out), "--repair", "--repair-regions", "0"]) == 2
    assert "--repair-regions must be between 1 and 10000" in capsys.readouterr().err
    assert not out.exists()


def test_repair_settings_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        RepairConfig(max_regions=0)
    with pytest.raises(ValidationError):
        RepairConfig(deblur="sharpen")
