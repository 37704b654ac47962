"""Real-blur benchmark builder (``histoblur bench real-pairs``) and pair registration."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from histoblur.cli.main import main
from histoblur.errors import InputError, ParameterError
from histoblur.io.images import read_image, write_image
from histoblur.synthesis.masks import PolygonMaskSampler
from histoblur.synthesis.real_pairs import (
    KIND_BLURRED,
    KIND_MIXED,
    KIND_SHARP,
    RealPairConfig,
    _draw_polygons,
    build_real_pairs,
    iter_benchmark,
    read_summary,
    replay,
)
from histoblur.synthesis.register import align_pair, estimate_shift


@pytest.fixture()
def pair(tmp_path, ihc):
    """An aligned synthetic pair: an IHC crop and its Gaussian-blurred copy, as files."""
    sharp = np.ascontiguousarray(ihc[100:260, 120:300])
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    write_image(tmp_path / "sharp.png", sharp)
    write_image(tmp_path / "blurred.png", blurred)
    return tmp_path / "sharp.png", tmp_path / "blurred.png", sharp, blurred


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_builder_pastes_real_blurred_pixels_under_masks(tmp_path, pair):
    sharp_path, blurred_path, sharp, blurred = pair
    config = RealPairConfig(n=12, tile=64, seed=3, sharp_fraction=0.2, blurred_fraction=0.2)
    summary = build_real_pairs(sharp_path, blurred_path, tmp_path / "bench", config)
    out = tmp_path / "bench"
    assert len(list((out / "images").glob("*.png"))) == 12
    assert len(list((out / "masks").glob("*.png"))) == 12
    assert summary["registration"]["shift"] == [0, 0]
    assert summary == read_summary(out)
    kinds = []
    for image, mask, record in iter_benchmark(out):
        png = read_image(out / "masks" / f"{record['id']}.png")
        assert png.dtype == np.uint8 and png.shape == image.shape[:2]
        assert set(np.unique(png)) <= {0, 255}
        y, x, t, _ = record["crop"]
        s, b = sharp[y : y + t, x : x + t], blurred[y : y + t, x : x + t]
        assert np.array_equal(image[mask], b[mask])
        assert np.array_equal(image[~mask], s[~mask])
        assert record["sharp"] == "sharp.png" and record["blurred"] == "blurred.png"
        assert record["blurred_fraction"] == pytest.approx(mask.mean(), abs=1e-5)
        if record["kind"] == KIND_SHARP:
            assert not mask.any() and record["polygons"] == []
        elif record["kind"] == KIND_BLURRED:
            assert mask.all()
        else:
            assert 0 < mask.mean() < 1 and record["polygons"]
            tile_sharpness = record["sharpness"]["sigma1"]
            assert tile_sharpness["outside"] > tile_sharpness["inside"]
        kinds.append(record["kind"])
        again, again_mask = replay(record, sharp_path, blurred_path)
        assert np.array_equal(again, image) and np.array_equal(again_mask, mask)
    assert sum(summary["counts"].values()) == 12 and set(kinds) <= {
        KIND_MIXED,
        KIND_SHARP,
        KIND_BLURRED,
    }
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    assert all(list(json.loads(line)) == sorted(json.loads(line)) for line in manifest)
    assert summary["sharpness"]["sigma1"]["tiles"]["sharp_wins"] == 1.0


def test_same_seed_gives_byte_identical_folders(tmp_path, pair):
    sharp_path, blurred_path, _, _ = pair
    config = RealPairConfig(n=6, tile=48, seed=7)
    build_real_pairs(sharp_path, blurred_path, tmp_path / "a", config)
    build_real_pairs(sharp_path, blurred_path, tmp_path / "b", config)
    build_real_pairs(
        sharp_path, blurred_path, tmp_path / "c", config.model_copy(update={"seed": 8})
    )
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b and set(a) == {
        "manifest.jsonl",
        "summary.json",
        *(f"{d}/{i:06d}.png" for d in ("images", "masks") for i in range(6)),
    }
    assert a["manifest.jsonl"] != c["manifest.jsonl"]


def test_sample_kinds_follow_the_fractions(tmp_path, pair):
    sharp_path, blurred_path, _, _ = pair
    only_sharp = RealPairConfig(n=5, tile=32, sharp_fraction=1.0, blurred_fraction=0.0)
    s = build_real_pairs(sharp_path, blurred_path, tmp_path / "s", only_sharp)
    assert s["counts"] == {KIND_MIXED: 0, KIND_SHARP: 5, KIND_BLURRED: 0}
    only_blurred = RealPairConfig(n=5, tile=32, sharp_fraction=0.0, blurred_fraction=1.0)
    b = build_real_pairs(sharp_path, blurred_path, tmp_path / "b", only_blurred)
    assert b["counts"] == {KIND_MIXED: 0, KIND_SHARP: 0, KIND_BLURRED: 5}
    assert all(m.all() for _, m, _ in iter_benchmark(tmp_path / "b"))
    mixed = RealPairConfig(n=60, tile=32, seed=1, sharp_fraction=0.3, blurred_fraction=0.3)
    m = build_real_pairs(sharp_path, blurred_path, tmp_path / "m", mixed)
    # Binomial(60, 0.3): mean 18, sd 3.5; these bounds fail with probability < 1e-3.
    assert 6 <= m["counts"][KIND_SHARP] <= 30 and 6 <= m["counts"][KIND_BLURRED] <= 30
    # Each sample has its own generator: a shorter build is a prefix of a longer one.
    short = build_real_pairs(
        sharp_path, blurred_path, tmp_path / "p", mixed.model_copy(update={"n": 7})
    )
    assert short["n"] == 7
    long_lines = (tmp_path / "m" / "manifest.jsonl").read_text().splitlines()[:7]
    assert (tmp_path / "p" / "manifest.jsonl").read_text().splitlines() == long_lines
    with pytest.raises(ValueError, match="must not exceed 1"):
        RealPairConfig(sharp_fraction=0.6, blurred_fraction=0.6)


def test_registration_recovers_a_known_integer_shift(ihc):
    crop = np.ascontiguousarray(ihc[50:250, 60:300])
    moved = np.roll(crop, (3, -5), axis=(0, 1))
    assert estimate_shift(crop, moved).shift == (3, -5)
    blurred = cv2.GaussianBlur(moved, (0, 0), 3)
    sharp_aligned, blurred_aligned, reg = align_pair(crop, blurred)
    assert reg.shift == (3, -5) and reg.registered and reg.correlation > 0.9
    assert sharp_aligned.shape == blurred_aligned.shape == (197, 235, 3)
    assert reg.sharp_box == (0, 5, 197, 240) and reg.blurred_box == (3, 0, 200, 235)
    # Without blur the aligned crops are the same pixels (np.roll's wrapped rows are cut away).
    s, m, _ = align_pair(crop, moved)
    assert np.array_equal(s, m)


def test_registration_of_planes_of_different_sizes(ihc):
    base = np.ascontiguousarray(ihc[:260, :300])
    defocused = cv2.GaussianBlur(base, (0, 0), 2.5)
    sharp = base[10:210, 10:250]  # 200 x 240
    blurred = defocused[4:212, 9:255]  # 208 x 246; its centred 200 x 240 crop starts at (8, 12)
    s, b, reg = align_pair(sharp, blurred)
    y0, x0, y1, x1 = reg.sharp_box
    by0, bx0, by1, bx1 = reg.blurred_box
    assert np.array_equal(s, sharp[y0:y1, x0:x1]) and s.shape == b.shape
    # The aligned blurred pixels are the defocused copy of exactly the aligned sharp pixels.
    assert np.array_equal(b, defocused[10 + y0 : 10 + y1, 10 + x0 : 10 + x1])
    assert reg.shift == (2, -2)
    _, _, off = align_pair(sharp, blurred, register=False)
    assert off.shift == (0, 0) and not off.registered and off.phase_correlation == ()


def test_cli_builds_and_reports(tmp_path, pair, capsys):
    sharp_path, blurred_path, _, _ = pair
    out = tmp_path / "cli"
    argv = ["bench", "real-pairs", "--sharp", str(sharp_path), "--blurred", str(blurred_path)]
    code = main([*argv, "--out", str(out), "--n", "3", "--tile", "64", "--seed", "2"])
    assert code == 0
    assert "Shift (dy, dx) = (0, 0)" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["config"]["tile"] == 64 and summary["config"]["seed"] == 2
    code = main(
        [*argv, "--out", str(out), "--n", "2", "--tile", "64", "--no-register", "--overwrite"]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and summary["registration"]["registered"] is False


def _no_temp_left(parent):
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_cli_error_paths(tmp_path, pair, capsys):
    sharp_path, blurred_path, sharp, _ = pair
    base = ["bench", "real-pairs", "--n", "2", "--tile", "64"]
    work = tmp_path / "work"
    work.mkdir()

    code = main([*base, "--sharp", str(tmp_path / "nope.png"), "--blurred", str(blurred_path),
                 "--out", str(work / "a")])  # fmt: skip
    assert code == 1 and "does not exist" in capsys.readouterr().err
    assert not (work / "a").exists()

    write_image(tmp_path / "grey.png", cv2.cvtColor(sharp, cv2.COLOR_RGB2GRAY))
    code = main([*base, "--sharp", str(tmp_path / "grey.png"), "--blurred", str(blurred_path),
                 "--out", str(work / "b")])  # fmt: skip
    assert code == 1 and "channel" in capsys.readouterr().err
    assert not (work / "b").exists()

    code = main([*base, "--sharp", str(sharp_path), "--blurred", str(blurred_path),
                 "--out", str(work / "c"), "--tile", "512"])  # fmt: skip
    assert code == 1 and "smaller than the 512 px tile" in capsys.readouterr().err

    code = main([*base, "--sharp", str(sharp_path), "--blurred", str(blurred_path),
                 "--out", str(work / "d"), "--sharp-fraction", "0.7",
                 "--blurred-fraction", "0.7"])  # fmt: skip
    assert code == 1 and "must not exceed 1" in capsys.readouterr().err

    full = work / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    code = main([*base, "--sharp", str(sharp_path), "--blurred", str(blurred_path),
                 "--out", str(full)])  # fmt: skip
    assert code == 1 and "--overwrite" in capsys.readouterr().err
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    assert _no_temp_left(work) and sorted(p.name for p in work.iterdir()) == ["full"]


def test_unusable_inputs_raise_clear_errors(pair, tmp_path):
    _, _, sharp, blurred = pair
    with pytest.raises(InputError, match="bit depth"):
        align_pair(sharp, blurred.astype(np.uint16))
    with pytest.raises(InputError, match="channel"):
        align_pair(sharp, blurred[..., 0])
    with pytest.raises(InputError, match="no manifest"):
        list(iter_benchmark(tmp_path))
    with pytest.raises(ParameterError, match="widen"):
        tiny = PolygonMaskSampler(count=(1, 1), size=(0.001, 0.001))
        _draw_polygons(np.random.default_rng(0), RealPairConfig(tile=32, masks=tiny))


def test_real_fqpath_pair(data_dir, tmp_path):
    folder = data_dir / "real_pairs" / "fqpath_left"
    if not (folder / "sharp.png").exists():
        pytest.skip(f"{folder} is absent")
    config = RealPairConfig(n=4, tile=128, seed=0, sharp_fraction=0.0, blurred_fraction=0.25)
    summary = build_real_pairs(
        folder / "sharp.png", folder / "blurred.png", tmp_path / "fq", config
    )
    assert summary["n"] == 4
    dy, dx = summary["registration"]["shift"]
    assert abs(dy) <= 2 and abs(dx) <= 2  # the two scans are nearly aligned
    assert summary["registration"]["correlation"] > 0.9
    samples = list(iter_benchmark(tmp_path / "fq"))
    assert len(samples) == 4 and all(img.shape == (128, 128, 3) for img, _, _ in samples)
    for _, _, record in samples:
        values = record["sharpness"]["sigma1"]
        assert values["sharp_tile"] > 2 * values["blurred_tile"]  # real defocus, every tile
        if record["kind"] == KIND_MIXED:
            assert values["outside"] > values["inside"]
