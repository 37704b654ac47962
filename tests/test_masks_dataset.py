import json

import cv2
import numpy as np
import pytest

from histoblur.cli.main import main
from histoblur.errors import InputError
from histoblur.io.images import read_image, write_image
from histoblur.synthesis.composite import composite
from histoblur.synthesis.dataset import DatasetConfig, build_dataset, iter_manifest, regenerate
from histoblur.synthesis.masks import PolygonMaskSampler, mask_to_png, rasterize, soft_alpha


def test_polygons_are_seeded_and_inside_ranges():
    sampler = PolygonMaskSampler(count=(2, 2), size=(0.2, 0.3), vertices=(6, 6))
    a = sampler.sample(np.random.default_rng(1), 100, 120)
    b = sampler.sample(np.random.default_rng(1), 100, 120)
    assert a == b and len(a) == 2 and all(len(p) == 6 for p in a)
    mask = rasterize(a, 100, 120)
    assert mask.dtype == bool and mask.shape == (100, 120) and 0 < mask.mean() < 1


def test_rasterize_fills_the_union_of_overlapping_polygons():
    squares = [[(0, 0), (20, 0), (20, 20), (0, 20)], [(10, 10), (30, 10), (30, 30), (10, 30)]]
    mask = rasterize(squares, 40, 40)
    assert mask[15, 15] and mask[5, 5] and mask[25, 25] and not mask[35, 35]


def test_rasterize_square_area_and_png():
    mask = rasterize([[(10, 10), (30, 10), (30, 30), (10, 30)]], 40, 40)
    assert abs(mask.sum() - 21 * 21) <= 21 * 2
    png = mask_to_png(mask)
    assert set(np.unique(png)) == {0, 255}


def test_composite_is_sharp_outside_blurred_inside(tile):
    blurred = cv2.GaussianBlur(tile, (0, 0), 3)
    mask = rasterize([[(10, 10), (60, 12), (50, 70)]], *tile.shape[:2])
    out = composite(tile, blurred, mask)
    assert np.array_equal(out[~mask], tile[~mask])
    assert np.array_equal(out[mask], blurred[mask])
    soft = composite(tile, blurred, soft_alpha(mask, 2.0))
    assert np.abs(soft.astype(int) - out).max() > 0


def test_composite_rejects_size_mismatch(tile):
    with pytest.raises(InputError, match="Mask"):
        composite(tile, tile, np.zeros((5, 5), bool))


@pytest.fixture()
def sharp_dir(tmp_path, ihc):
    folder = tmp_path / "sharp"
    folder.mkdir()
    write_image(folder / "a.png", ihc[:200, :200])
    write_image(folder / "b.png", ihc[200:400, 250:500])
    return folder


def test_dataset_is_reproducible_and_replayable(tmp_path, sharp_dir):
    config = DatasetConfig(
        methods=("gaussian", "motion", "variable-defocus", "zoom"),
        n=6,
        tile=64,
        seed=4,
        min_tissue=0.2,
    )
    build_dataset(sharp_dir, tmp_path / "d1", config)
    build_dataset(sharp_dir, tmp_path / "d2", config)
    for sub in ("images", "masks"):
        for f in sorted((tmp_path / "d1" / sub).iterdir()):
            assert f.read_bytes() == (tmp_path / "d2" / sub / f.name).read_bytes()
    assert (tmp_path / "d1/manifest.jsonl").read_text() == (
        tmp_path / "d2/manifest.jsonl"
    ).read_text()
    records = list(iter_manifest(tmp_path / "d1"))
    assert len(records) == 6
    for rec in records:
        tile, mask = regenerate(rec, sharp_dir)
        assert np.array_equal(tile, read_image(tmp_path / "d1/images" / f"{rec['id']}.png"))
        saved = read_image(tmp_path / "d1/masks" / f"{rec['id']}.png")
        assert np.array_equal(mask, saved > 0) and set(np.unique(saved)) <= {0, 255}
        assert rec["blurred_fraction"] == pytest.approx(mask.mean(), abs=1e-6)


def test_blurred_region_is_less_sharp(tmp_path, sharp_dir):
    config = DatasetConfig(
        methods=("lens",),
        n=4,
        tile=96,
        seed=1,
        min_tissue=0.2,
        ranges={"lens": {"radius": (4.0, 6.0)}},
        masks=PolygonMaskSampler(count=(1, 1), size=(0.3, 0.35)),
    )
    build_dataset(sharp_dir, tmp_path / "d", config)
    for rec in iter_manifest(tmp_path / "d"):
        image = read_image(tmp_path / "d/images" / f"{rec['id']}.png").astype(np.float32)
        mask = read_image(tmp_path / "d/masks" / f"{rec['id']}.png") > 0
        lap = np.abs(cv2.Laplacian(image.mean(axis=2), cv2.CV_32F))
        inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5))) > 0
        outer = cv2.erode((~mask).astype(np.uint8), np.ones((5, 5))) > 0
        if inner.sum() > 50 and outer.sum() > 50:
            assert lap[inner].mean() < 0.6 * lap[outer].mean()


def test_cli_dataset_and_overwrite_rules(tmp_path, sharp_dir):
    out = tmp_path / "ds"
    args = [
        "synth",
        "dataset",
        "--sharp",
        str(sharp_dir),
        "--out",
        str(out),
        "--method",
        "gaussian,mixed",
        "--n",
        "3",
        "--tile",
        "64",
        "--seed",
        "2",
        "--min-tissue",
        "0.2",
    ]
    assert main(args) == 0
    assert len(list((out / "images").iterdir())) == 3
    assert json.loads((out / "config.json").read_text())["methods"] == ["gaussian", "mixed"]
    before = (out / "manifest.jsonl").read_bytes()
    assert main(args) == 1  # refuses to overwrite
    assert (out / "manifest.jsonl").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize("extra", [["--method", "nope"], ["--tile", "4096"], ["--n", "0"]])
def test_cli_dataset_bad_options(tmp_path, sharp_dir, extra, capsys):
    args = [
        "synth",
        "dataset",
        "--sharp",
        str(sharp_dir),
        "--out",
        str(tmp_path / "x"),
        "--n",
        "2",
        "--tile",
        "64",
        *extra,
    ]
    assert main(args) == 1
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_dataset_missing_folder(tmp_path):
    assert (
        main(["synth", "dataset", "--sharp", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
        == 1
    )
    assert not (tmp_path / "o").exists()


def test_cli_blur_writes_images_and_params(tmp_path, ihc):
    write_image(tmp_path / "x.png", ihc[:64, :80])
    grey = cv2.cvtColor(ihc[:40, :50], cv2.COLOR_RGB2GRAY)
    write_image(tmp_path / "g.tif", grey)
    out = tmp_path / "out"
    for method in (
        "gaussian",
        "lens",
        "aperture",
        "radial",
        "zoom",
        "spin",
        "motion",
        "mixed",
        "variable-defocus",
        "motion-h",
    ):
        assert (
            main(
                [
                    "synth",
                    "blur",
                    "--method",
                    method,
                    "--out",
                    str(out),
                    "--overwrite",
                    str(tmp_path / "x.png"),
                    str(tmp_path / "g.tif"),
                ]
            )
            == 0
        )
        assert read_image(out / "x.png").shape == (64, 80, 3)
        assert read_image(out / "g.png").shape == (40, 50)
    assert (
        main(
            [
                "synth",
                "blur",
                "--method",
                "gaussian",
                "--param",
                "sigma=2.5",
                "--jpeg-quality",
                "80",
                "--out",
                str(out),
                "--overwrite",
                str(tmp_path / "x.png"),
            ]
        )
        == 0
    )
    line = json.loads((out / "params.jsonl").read_text().splitlines()[0])
    assert line["blur"] == {"kind": "gaussian", "sigma": 2.5}
    assert line["degrade"]["jpeg_quality"] == 80


def test_cli_blur_bad_inputs_write_nothing(tmp_path, ihc, capsys):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    write_image(tmp_path / "ok.png", ihc[:32, :32])
    out = tmp_path / "out"
    assert (
        main(
            [
                "synth",
                "blur",
                "--method",
                "gaussian",
                "--out",
                str(out),
                str(tmp_path / "ok.png"),
                str(tmp_path / "bad.png"),
            ]
        )
        == 1
    )
    assert "corrupt" in capsys.readouterr().err
    assert not out.exists()
    assert (
        main(
            [
                "synth",
                "blur",
                "--method",
                "gaussian",
                "--out",
                str(out),
                str(tmp_path / "missing.png"),
            ]
        )
        == 1
    )
    assert (
        main(
            [
                "synth",
                "blur",
                "--method",
                "motion",
                "--param",
                "length=0",
                "--out",
                str(out),
                str(tmp_path / "ok.png"),
            ]
        )
        == 1
    )
    assert (
        main(
            [
                "synth",
                "blur",
                "--method",
                "gaussian",
                "--param",
                "sigma",
                "--out",
                str(out),
                str(tmp_path / "ok.png"),
            ]
        )
        == 1
    )


def test_cli_blur_unwritable_output(tmp_path, ihc):
    write_image(tmp_path / "ok.png", ihc[:32, :32])
    (tmp_path / "file").write_text("x")
    assert (
        main(
            [
                "synth",
                "blur",
                "--method",
                "gaussian",
                "--out",
                str(tmp_path / "file" / "o"),
                str(tmp_path / "ok.png"),
            ]
        )
        == 1
    )


def test_real_sharp_folder_dataset(tmp_path, data_dir):
    config = DatasetConfig(n=3, tile=128, seed=0)
    build_dataset(data_dir / "sharp", tmp_path / "real", config)
    assert len(list(iter_manifest(tmp_path / "real"))) == 3


def test_dataset_fractions_and_scale(tmp_path, sharp_dir):
    from histoblur.synthesis.dataset import draw_sample, usable_sources

    config = DatasetConfig(
        methods=("lens",),
        n=40,
        tile=48,
        seed=2,
        min_tissue=0.2,
        sharp_fraction=0.3,
        blurred_fraction=0.3,
        scale=(0.8, 2.0),
    )
    sources = usable_sources(sharp_dir, 48)
    fractions, scales = [], []
    for i in range(40):
        record, tile, mask = draw_sample(i, sources, sharp_dir, config)
        assert tile.shape == (48, 48, 3) and mask.shape == (48, 48)
        again, mask2 = regenerate(record, sharp_dir)
        assert np.array_equal(again, tile) and np.array_equal(mask2, mask)
        fractions.append(mask.mean())
        scales.append(record["scale"])
    fractions = np.array(fractions)
    assert 4 <= (fractions == 0).sum() <= 20 and 4 <= (fractions == 1).sum() <= 20
    assert min(scales) >= 0.8 and max(scales) <= 2.0 and len(set(scales)) > 30
    # an upscaled source is smoother: its sharp tiles carry less Laplacian energy
    sharp_only = config.model_copy(update={"sharp_fraction": 1.0, "blurred_fraction": 0.0})
    energy = {}
    for s in (1.0, 2.0):
        cfg = sharp_only.model_copy(update={"scale": (s, s)})
        tiles = [draw_sample(i, sources, sharp_dir, cfg)[1] for i in range(8)]
        energy[s] = np.mean(
            [cv2.Laplacian(t[..., 1].astype(np.float32), cv2.CV_32F).var() for t in tiles]
        )
    assert energy[2.0] < 0.5 * energy[1.0]
    with pytest.raises(ValueError):
        DatasetConfig(sharp_fraction=0.7, blurred_fraction=0.7)
    with pytest.raises(ValueError):
        DatasetConfig(scale=(2.0, 1.0))


def test_visible_labels_leave_out_featureless_regions():
    from histoblur.synthesis.dataset import visible_change

    sharp = np.full((64, 64, 3), 200, np.uint8)  # flat glass on the left half
    rng = np.random.default_rng(0)
    sharp[:, 32:] = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)  # texture on the right
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    visible = visible_change(sharp, blurred, 0.015)
    assert not visible[:, :20].any()  # blurring flat glass changes nothing
    assert visible[:, 40:].all()


def test_cli_dataset_params_reach_the_methods_that_have_them(tmp_path, sharp_dir):
    out = tmp_path / "ds"
    args = ["synth", "dataset", "--sharp", str(sharp_dir), "--out", str(out), "--method",
            "gaussian,motion", "--param", "sigma=2.5", "--n", "4", "--tile", "64"]  # fmt: skip
    assert main(args) == 0
    specs = [r["blur"] for r in iter_manifest(out)]
    assert all(s["sigma"] == 2.5 for s in specs if s["kind"] == "gaussian")
    args[args.index("sigma=2.5")] = "blades=6"  # neither kind has it
    assert main([*args, "--overwrite"]) == 1


def test_cli_dataset_from_a_config_file(tmp_path, sharp_dir):
    config = tmp_path / "ds.yaml"
    config.write_text("methods: [lens]\nn: 3\ntile: 48\nranges: {lens: {radius: 4}}\n")
    out = tmp_path / "ds"
    args = ["synth", "dataset", "--sharp", str(sharp_dir), "--out", str(out), "--config",
            str(config)]  # fmt: skip
    assert main(args) == 0
    specs = [r["blur"] for r in iter_manifest(out)]
    assert len(specs) == 3 and all(s["radius"] == 4 for s in specs)
    config.write_text("methods: [lens]\nn: 0\n")
    assert main([*args[:-2], "--config", str(config), "--out", str(tmp_path / "bad")]) == 1
