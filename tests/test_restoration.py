"""Diffusion restoration foundations: schedule, Swin denoiser with time token, regional sampling."""

from dataclasses import replace

import pytest
import torch

from histoblur.diffusion.regional import (
    RECIPE,
    RestoreSettings,
    denoiser_passes,
    restore_region,
    time_path,
)
from histoblur.diffusion.schedule import ScheduleConfig, q_sample
from histoblur.errors import ParameterError
from histoblur.models.swin_denoiser import (
    SwinBlock,
    SwinDenoiser,
    SwinDenoiserConfig,
    shift_mask,
    window_partition,
    window_reverse,
)

TINY = SwinDenoiserConfig(embed_dim=8, depths=(1, 2), heads=(1, 2), window=4, patch=1)
SHORT = ScheduleConfig(timesteps=20)


def test_window_partition_round_trips():
    x = torch.randn(2, 8, 12, 5)
    windows = window_partition(x, 4)
    assert windows.shape == (2 * 2 * 3, 16, 5)
    assert torch.equal(window_reverse(windows, 4, 8, 12), x)


def test_shifted_windows_only_join_tokens_of_one_region():
    allowed = shift_mask(8, 8, 4, 2, torch.device("cpu"))
    assert allowed.shape == (4, 16, 16)
    assert bool(allowed[0].all())  # the top-left window is one region
    assert not bool(allowed[-1].all())  # the bottom-right one mixes four regions


@pytest.mark.parametrize("shift", [0, 2])
def test_time_token_is_dropped_and_time_changes_the_output(shift):
    torch.manual_seed(0)
    block = SwinBlock(8, 2, 4, shift, 16, TINY).eval()
    x = torch.randn(1, 8, 8, 8)
    out_a = block(x, torch.randn(1, 16))
    out_b = block(x, torch.randn(1, 16))
    assert out_a.shape == x.shape  # as many tokens out as in
    assert not torch.allclose(out_a, out_b)


@pytest.mark.parametrize("time", ["token", "add"])
def test_denoiser_keeps_the_image_shape(time):
    torch.manual_seed(0)
    model = SwinDenoiser(TINY.model_copy(update={"time": time}))
    x = torch.randn(2, 3, 16, 24)
    assert model(x, torch.tensor([0, 19])).shape == x.shape
    with pytest.raises(ValueError):
        model(torch.randn(1, 3, 12, 16), torch.tensor([0]))


def test_forward_process_statistics_match_the_schedule():
    ab = SHORT.alpha_bar().float()
    x0 = torch.full((4000, 1, 1, 1), 0.6)
    t = torch.full((4000,), 7)
    x_t = q_sample(ab, x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)))
    assert float(x_t.mean()) == pytest.approx(0.6 * float(ab[7].sqrt()), abs=0.04)
    assert float(x_t.var()) == pytest.approx(1 - float(ab[7]), rel=0.06)


def test_time_path_without_and_with_resampling():
    assert time_path(4, 0, 1) == [3, 2, 1, 0, -1]
    path = time_path(6, 2, 2)
    assert path[0] == 5 and path[-1] == -1
    ups = sum(1 for a, b in zip(path, path[1:], strict=False) if b > a)
    assert ups == 2 * 2  # two jumps up of two positions
    papers = RestoreSettings(sampler="ddpm", steps=None, jump_length=10, resamples=10)
    assert 2300 <= denoiser_passes(papers, ScheduleConfig()) <= 2500  # ArtiFusion's ~2,400


@pytest.fixture()
def scene():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., 4:10, 5:12] = True
    return SwinDenoiser(TINY).eval(), image, mask


@pytest.mark.parametrize(
    "settings",
    [
        RestoreSettings("ddpm", None, 0, 1),
        RestoreSettings("ddim", 5, 0, 1),
        RestoreSettings("ddpm", 8, 2, 2),
    ],  # fmt: skip
)
def test_outside_the_mask_is_bit_identical(scene, settings):
    model, image, mask = scene
    out = restore_region(model, image, mask, SHORT, settings, torch.Generator().manual_seed(1))
    keep = ~mask.expand_as(image)
    assert torch.equal(out[keep], image[keep])
    assert not torch.equal(out[~keep], image[~keep])
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_ddim_replays_for_a_seed(scene):
    model, image, mask = scene
    settings = RestoreSettings("ddim", 5, 0, 1, eta=0.0)
    runs = [restore_region(model, image, mask, SHORT, settings, torch.Generator().manual_seed(s))
            for s in (3, 3, 4)]  # fmt: skip
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.fixture()
def sharp_dir(tmp_path, ihc):
    from histoblur.io.images import write_image

    folder = tmp_path / "sharp"
    folder.mkdir()
    for k in range(7):  # every sixth image is held out
        write_image(folder / f"t{k}.png", ihc[k * 40 : k * 40 + 96, k * 30 : k * 30 + 96])
    return folder


@pytest.mark.parametrize("arch", ["swin-denoiser", "conv-denoiser"])
def test_tiny_denoiser_trains_and_restores_from_its_checkpoint(sharp_dir, tmp_path, arch):
    from histoblur.models.registry import load_model
    from histoblur.training.restoration import RestorationTrainConfig, train_restoration

    model = TINY.model_dump() if arch == "swin-denoiser" else {"arch": arch, "width": 4, "depth": 2}
    config = RestorationTrainConfig.model_validate({
        "out": tmp_path / "run", "sharp_dir": sharp_dir, "model": model, "schedule": SHORT,
        "tile": 32, "batch_size": 2, "min_tissue": 0.0, "epochs": 2, "steps_per_epoch": 3,
        "lr": 1e-3, "val_crops": 2, "val_steps": 3, "threads": 1,
    })  # fmt: skip
    summary = train_restoration(config)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in summary["history"])
    network, saved = load_model(tmp_path / "run" / "best")
    assert saved["task"] == "restore-denoiser"
    assert network(torch.randn(1, 3, 32, 32), torch.tensor([5])).shape == (1, 3, 32, 32)


def test_cli_train_restore_refuses_a_missing_folder(tmp_path):
    from histoblur.cli.main import main

    args = ["train", "restore", "--set", f"sharp_dir={tmp_path / 'none'}", "--set",
            f"out={tmp_path / 'run'}"]  # fmt: skip
    assert main(args) == 1 and not (tmp_path / "run").exists()


@pytest.fixture()
def denoiser_dir(tmp_path):
    from histoblur.io.checkpoints import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path / "denoiser",
        SwinDenoiser(TINY).state_dict(),
        {"task": "restore-denoiser", "model": TINY.model_dump(),
         "inference": {"schedule": SHORT.model_dump()}},
    )  # fmt: skip


def two_regions(shape):
    import numpy as np

    mask = np.zeros(shape, bool)
    mask[10:30, 20:45] = True
    mask[60:95, 100:130] = True
    return mask


@pytest.mark.parametrize("grey", [False, True])
def test_restorer_changes_only_the_masked_pixels_of_any_size(denoiser_dir, ihc, grey):
    import cv2

    from histoblur.inference.restore import Restorer

    image = ihc[:100, :140].copy()
    if grey:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mask = two_regions(image.shape[:2])
    out = Restorer.load(denoiser_dir).restore(image, mask, RestoreSettings("ddim", 4), seed=0)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert (out[~mask] == image[~mask]).all()
    assert (out[mask] != image[mask]).any()


def test_weight_is_taken_once_over_overlapping_windows(denoiser_dir, ihc):
    import numpy as np

    from histoblur.inference.inpaint import inpaint
    from histoblur.inference.restore import Restorer

    image = ihc[:64, :320].copy()
    mask = np.zeros(image.shape[:2], bool)
    mask[20:44, 8:312] = True  # wider than one window's core: two windows that overlap
    restorer = Restorer.load(denoiser_dir)
    assert len(restorer.windows(mask)) == 2
    walk = RestoreSettings("ddim", 4, 0, 1, eta=0.0, strength=0.5, start="laplace")
    half = restorer.restore(image, mask, replace(walk, weight=0.5), seed=0).astype(float)
    full = restorer.restore(image, mask, walk, seed=0).astype(float)
    fill = inpaint(image, mask, "laplace").astype(float)
    assert np.abs(half - (fill + full) / 2)[mask].max() <= 1.0
    assert (half[~mask] == image[~mask]).all()


def test_restorer_refuses_a_mask_of_another_size(denoiser_dir, ihc):
    import numpy as np

    from histoblur.errors import InputError
    from histoblur.inference.restore import Restorer

    with pytest.raises(InputError, match="mask"):
        Restorer.load(denoiser_dir).restore(
            ihc[:64, :64], np.ones((32, 32), bool), RestoreSettings()
        )


def test_cli_restore_file_and_folder_forms(denoiser_dir, ihc, tmp_path):
    import numpy as np

    from histoblur.cli.main import main
    from histoblur.io.images import read_image, write_image

    image, mask = ihc[:100, :140], two_regions((100, 140))
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    write_image(tmp_path / "img" / "a.png", image)
    write_image(tmp_path / "msk" / "a.png", (mask * 255).astype(np.uint8))
    out = tmp_path / "a_restored.png"
    common = ["--model", str(denoiser_dir), "--steps", "3"]
    assert main(["restore", str(tmp_path / "img" / "a.png"), "--mask",
                 str(tmp_path / "msk" / "a.png"), "--out", str(out), *common]) == 0  # fmt: skip
    restored = read_image(out)
    assert (restored[~mask] == image[~mask]).all()
    assert main(["restore", str(tmp_path / "img"), "--mask", str(tmp_path / "msk"), "--out",
                 str(tmp_path / "outdir"), *common]) == 0  # fmt: skip
    assert (tmp_path / "outdir" / "a.png").is_file()
    write_image(tmp_path / "img" / "b.png", image)  # no mask for b
    assert main(["restore", str(tmp_path / "img"), "--mask", str(tmp_path / "msk"), "--out",
                 str(tmp_path / "out2"), *common]) == 1  # fmt: skip
    assert not (tmp_path / "out2").exists()
    # from pure noise the recipe's half weight does not apply; asked for, it is refused
    single = [str(tmp_path / "img" / "a.png"), "--mask", str(tmp_path / "msk" / "a.png")]
    assert main(["restore", *single, "--out", str(tmp_path / "n.png"), *common,
                 "--strength", "1"]) == 0  # fmt: skip
    assert main(["restore", *single, "--out", str(tmp_path / "w.png"), *common,
                 "--strength", "1", "--weight", "0.5"]) == 1  # fmt: skip
    assert not (tmp_path / "w.png").exists()
    # from the artifact all of the walk is kept unless told otherwise (half would keep the
    # artifact), and asking to keep less of it is refused
    assert main(["restore", *single, "--out", str(tmp_path / "a.png"), *common,
                 "--start", "artifact", "--strength", "0.5"]) == 0  # fmt: skip
    assert main(["restore", *single, "--out", str(tmp_path / "b.png"), *common,
                 "--start", "artifact", "--strength", "0.5", "--weight", "0.5"]) == 1  # fmt: skip
    assert not (tmp_path / "b.png").exists()


@pytest.mark.parametrize("kind", ["fold", "bubble", "blur"])
def test_artifacts_change_exactly_their_mask(ihc, kind):
    import numpy as np

    from histoblur.io.images import to_float
    from histoblur.synthesis.artifacts import add_artifact

    image = to_float(ihc[:128, :128])
    out, mask = add_artifact(image, kind, np.random.default_rng(0))
    assert mask.any() and not mask.all()
    assert np.array_equal(out[~mask], image[~mask])
    if kind == "blur":  # blur keeps the mean and removes detail
        assert abs(out[mask].mean() - image[mask].mean()) < 0.02
        assert np.abs(out - image)[mask].mean() > 0.01
        return
    changed = out[mask].mean() - image[mask].mean()
    assert changed < 0 if kind == "fold" else changed > 0  # folds darken, bubbles wash out


@pytest.mark.parametrize("method", ["telea", "ns", "laplace", "harmonise"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "grey"])
def test_classical_inpainting_changes_only_the_mask(ihc, method, dtype):
    import cv2
    import numpy as np

    from histoblur.inference.inpaint import inpaint

    image = ihc[:64, :80].copy()
    if dtype == "uint16":
        image = image.astype(np.uint16) * 257
    elif dtype == "grey":
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mask = np.zeros(image.shape[:2], bool)
    mask[20:40, 30:50] = True
    out = inpaint(image, mask, method)
    assert out.dtype == image.dtype and out.shape == image.shape
    assert np.array_equal(out[~mask], image[~mask])
    assert not np.array_equal(out[mask], image[mask])


def test_settings_refuse_out_of_range_values_and_strength_shortens_the_walk():
    from histoblur.errors import ParameterError

    for bad in ({"eta": 1.5}, {"strength": 0.0}, {"strength": 1.2}, {"resamples": 0},
                {"steps": 0}, {"sampler": "euler"}, {"weight": 0.0}, {"weight": 1.5},
                {"weight": 0.5, "strength": 1.0},
                {"weight": 0.5, "strength": 0.5, "start": "artifact"}):  # fmt: skip
        with pytest.raises(ParameterError):
            RestoreSettings(**bad)
    full = denoiser_passes(RestoreSettings("ddpm", None, 0, 1), SHORT)
    half = denoiser_passes(RestoreSettings("ddpm", None, 0, 1, strength=0.5), SHORT)
    assert denoiser_passes(RestoreSettings(), ScheduleConfig()) == 26  # the fast default
    assert denoiser_passes(RECIPE, ScheduleConfig()) == 6  # t = round(0.02 * 249) = 5 down to 0
    assert full == 20 and half == 11  # t = round(0.5 * 19) = 10 down to 0


def test_strength_starts_from_the_artifact_and_observe_sees_every_step(scene):
    model, image, mask = scene
    seen = []
    settings = RestoreSettings("ddim", None, 0, 1, eta=1.0, strength=0.3)
    out = restore_region(model, image, mask, SHORT, settings, torch.Generator().manual_seed(0),
                         lambda t, x: seen.append((t, x.shape)))  # fmt: skip
    assert [t for t, _ in seen] == list(range(6, -1, -1))  # round(0.3 * 19) = 6 down to 0
    assert all(shape == image.shape for _, shape in seen)
    keep = ~mask.expand_as(image)
    assert torch.equal(out[keep], image[keep])
    # starting from the noised image keeps the masked region much closer to it than noise does
    scratch = restore_region(model, image, mask, SHORT, RestoreSettings("ddim", None, 0, 1),
                             torch.Generator().manual_seed(0))  # fmt: skip
    region = mask.expand_as(image)
    assert (out - image)[region].abs().mean() < (scratch - image)[region].abs().mean()


def test_weight_keeps_that_share_of_the_walks_change_to_the_start(scene):
    model, image, mask = scene
    walk = RestoreSettings(
        "ddim", None, 0, 1, eta=1.0, strength=0.3, start="telea"
    )  # image: the fill
    full, half = (
        restore_region(
            model, image, mask, SHORT, replace(walk, weight=w), torch.Generator().manual_seed(0)
        )  # fmt: skip
        for w in (1.0, 0.5)
    )
    keep = ~mask.expand_as(image)
    assert torch.equal(half[keep], image[keep])
    assert torch.allclose(half, (full + image) / 2, atol=1e-6)
    assert not torch.allclose(full, image)


@pytest.mark.parametrize("kind", ["fold", "bubble", "pen"])
def test_harmonise_keeps_the_tissue_an_artifact_still_shows(ihc, kind):
    from histoblur.inference.inpaint import inpaint
    from histoblur.metrics import masked_l2, ssim

    clean = ihc[:256, :256]
    image, mask = _degraded(ihc, kind)
    harmonised, telea = inpaint(image, mask, "harmonise"), inpaint(image, mask, "telea")
    assert (harmonised[~mask] == image[~mask]).all()
    assert masked_l2(clean, harmonised, mask) < masked_l2(clean, telea, mask)
    assert ssim(clean, harmonised) > ssim(clean, telea)


def test_harmonise_paints_a_blank_block_with_the_mean_of_telea_and_laplace(ihc):
    import numpy as np

    from histoblur.inference.inpaint import inpaint

    image = ihc[:128, :128].copy()
    mask = np.zeros(image.shape[:2], bool)
    mask[40:90, 30:80] = True
    image[mask] = 255  # nothing of the tissue left to keep
    telea, laplace = (inpaint(image, mask, m).astype(float) for m in ("telea", "laplace"))
    harmonised = inpaint(image, mask, "harmonise")
    assert np.abs(harmonised - (telea + laplace) / 2).max() <= 0.5
    assert (harmonised[~mask] == image[~mask]).all()


def test_laplace_fill_is_the_harmonic_surface_through_the_border():
    import numpy as np

    from histoblur.inference.inpaint import inpaint

    # a linear ramp is harmonic: Laplace's equation reproduces it inside any hole
    ramp = np.add.outer(np.arange(40) * 2.0, np.arange(50) * 3.0).astype(np.uint16)
    hole = np.zeros(ramp.shape, bool)
    hole[10:30, 5:45] = True
    blanked = ramp.copy()
    blanked[hole] = 0
    assert np.abs(inpaint(blanked, hole, "laplace").astype(int) - ramp).max() <= 1
    # a hole touching the image border (no flux across it) and a constant surround
    flat = np.full((30, 30, 3), 120, np.uint8)
    flat[:10, :10] = 0
    edge = np.zeros((30, 30), bool)
    edge[:10, :10] = True
    assert (inpaint(flat, edge, "laplace") == 120).all()
    # RGBA keeps its alpha; a mask over the whole image has no border to solve from
    rgba = np.dstack([flat, np.full((30, 30), 77, np.uint8)])
    filled = inpaint(rgba, edge, "laplace")
    assert (filled[..., :3] == 120).all() and (filled[..., 3] == 77).all()
    assert (inpaint(rgba, np.ones((30, 30), bool), "laplace") == rgba).all()


def test_recipe_starts_from_the_harmonised_fill(denoiser_dir, ihc):
    import numpy as np

    from histoblur.inference.inpaint import inpaint
    from histoblur.inference.restore import Restorer
    from histoblur.metrics import masked_l2

    image, mask = _degraded(ihc, "bubble")
    restorer = Restorer.load(denoiser_dir)
    out = restorer.restore(image, mask, RECIPE, seed=0)
    artifact = restorer.restore(image, mask, replace(RECIPE, start="artifact", weight=1.0), seed=0)
    harmonised = inpaint(image, mask, "harmonise")
    assert (out[~mask] == image[~mask]).all()
    assert masked_l2(harmonised, out, mask) < masked_l2(harmonised, artifact, mask)
    # the recipe keeps half of the walk's change to the fill, not to the artifact
    full = restorer.restore(image, mask, replace(RECIPE, weight=1.0), seed=0).astype(float)
    mean = (harmonised.astype(float) + full) / 2
    assert np.abs(out[mask] - mean[mask]).max() <= 1.0
    with pytest.raises(ParameterError, match="start"):
        replace(RECIPE, start="noise")


def test_cli_restore_classical_methods_need_no_model(ihc, tmp_path):
    import numpy as np

    from histoblur.cli.main import main
    from histoblur.inference.inpaint import inpaint
    from histoblur.io.images import read_image, write_image

    image, mask = _degraded(ihc, "fold")
    write_image(tmp_path / "a.png", image)
    write_image(tmp_path / "m.png", (mask * 255).astype(np.uint8))
    out = tmp_path / "o.png"
    args = ["restore", str(tmp_path / "a.png"), "--mask", str(tmp_path / "m.png"), "--out"]
    assert main([*args, str(out), "--method", "harmonise", "--model", str(tmp_path / "none")]) == 0
    assert np.array_equal(read_image(out), inpaint(image, mask, "harmonise"))


def _degraded(ihc, kind, seed=1):
    import numpy as np

    from histoblur.io.images import from_float, to_float
    from histoblur.synthesis.artifacts import add_artifact

    out, mask = add_artifact(to_float(ihc[:256, :256]), kind, np.random.default_rng(seed))
    return from_float(out, np.uint8), mask


@pytest.mark.parametrize("kind", ["fold", "bubble", "blur"])
def test_threshold_detector_finds_each_artifact(ihc, kind):
    from histoblur.inference.artifacts import threshold_artifacts
    from histoblur.metrics import dice

    image, truth = _degraded(ihc, kind)
    found = threshold_artifacts(image)
    assert dice(truth, found) > 0.5
    assert threshold_artifacts(ihc[:256, :256]).mean() < 0.1  # the clean tile: little flagged


def test_detector_names_and_kinds(ihc):
    from histoblur.errors import ParameterError
    from histoblur.inference.artifacts import ThresholdConfig
    from histoblur.inference.detectors import make_detector

    image, truth = _degraded(ihc, "bubble")
    only_dark = make_detector("threshold", thresholds=ThresholdConfig(kinds=("dark",)))
    assert only_dark(image)[truth].mean() < make_detector("threshold")(image)[truth].mean()
    with pytest.raises(ParameterError, match="Unknown detector"):
        make_detector("no-such-detector")
    blurred, truth = _degraded(ihc, "blur")
    found = make_detector("segmenter")(blurred)  # the shipped blur segmenter
    assert found.shape == truth.shape and found.dtype == bool
    assert found[truth].mean() > found[~truth].mean()


def test_detect_and_restore_changes_only_flagged_pixels(denoiser_dir, ihc):
    from histoblur.inference.detectors import make_detector
    from histoblur.inference.restore import Restorer, detect_and_restore, restoring

    image, _ = _degraded(ihc, "bubble")
    fill = restoring(Restorer.load(denoiser_dir), RestoreSettings("ddim", 3))
    loop = detect_and_restore(fill, make_detector("threshold"), image)
    assert loop.flagged.any() and loop.after.shape == loop.flagged.shape
    assert (loop.restored[~loop.flagged] == image[~loop.flagged]).all()
    assert (loop.restored[loop.flagged] != image[loop.flagged]).any()
    assert 0 < loop.flagged_fraction < 1 and 0 <= loop.after_fraction <= 1


def test_cli_restore_detect_writes_masks_and_a_table(denoiser_dir, ihc, tmp_path):
    from histoblur.cli.main import main
    from histoblur.io.images import read_image, write_image

    image, _ = _degraded(ihc, "fold")
    (tmp_path / "img").mkdir()
    write_image(tmp_path / "img" / "a.png", image)
    common = ["--model", str(denoiser_dir), "--steps", "3", "--detect", "threshold"]
    out = tmp_path / "a_restored.png"
    assert main(["restore", str(tmp_path / "img" / "a.png"), "--out", str(out), *common]) == 0
    flagged = read_image(tmp_path / "a_restored_mask.png") > 0
    assert flagged.any() and (tmp_path / "a_restored_after_mask.png").is_file()
    assert (read_image(out)[~flagged] == image[~flagged]).all()
    assert main(["restore", str(tmp_path / "img"), "--out", str(tmp_path / "o"), *common]) == 0
    table = (tmp_path / "o" / "detections.csv").read_text().splitlines()
    assert table[0] == "image,flagged_fraction,after_fraction" and table[1].startswith("a.png,")
    with pytest.raises(SystemExit):  # --mask and --detect exclude each other
        main(["restore", str(out), "--mask", str(out), "--out", str(tmp_path / "x.png"), *common])
    assert main(["restore", str(out), "--out", str(tmp_path / "y.png"), "--model",
                 str(denoiser_dir), "--detect", "threshold", "--eta", "2"]) == 1  # fmt: skip


def test_batches_hold_same_shape_windows_and_overlaps_wait():
    from histoblur.inference.restore import _next_batch

    jobs = [(0, (0, 0, 32, 32)), (0, (16, 16, 48, 48)), (1, (0, 0, 32, 32)), (0, (64, 0, 96, 32)),
            (1, (0, 0, 64, 64))]  # fmt: skip
    batch, left = _next_batch(jobs, 8)
    assert batch == [(0, (0, 0, 32, 32)), (1, (0, 0, 32, 32)), (0, (64, 0, 96, 32))]
    assert left == [(0, (16, 16, 48, 48)), (1, (0, 0, 64, 64))]
    assert _next_batch(jobs, 1) == (jobs[:1], jobs[1:])


def test_restore_many_batches_images_of_different_sizes(denoiser_dir, ihc):
    import numpy as np

    from histoblur.inference.restore import Restorer

    restorer = Restorer.load(denoiser_dir)
    images = [ihc[:100, :140].copy(), ihc[200:296, 100:180].copy()]
    masks = [two_regions((100, 140)), np.zeros((96, 80), bool)]
    masks[1][30:50, 20:60] = True
    settings = RestoreSettings("ddim", 3)
    for size in (1, 8):
        outs = restorer.restore_many(images, masks, settings, seed=0, batch_size=size)
        for image, mask, out in zip(images, masks, outs, strict=True):
            assert out.shape == image.shape and (out[~mask] == image[~mask]).all()
            assert (out[mask] != image[mask]).any()


def test_shipped_restorer_brings_a_bubble_closer_to_the_clean_tissue(ihc):
    from histoblur.inference.restore import Restorer
    from histoblur.metrics import masked_l2

    clean = ihc[:256, :256]
    image, truth = _degraded(ihc, "bubble")
    restored = Restorer.load("default").restore(image, truth, RestoreSettings(), seed=0)
    assert (restored[~truth] == image[~truth]).all()
    assert masked_l2(clean, restored, truth) < 0.8 * masked_l2(clean, image, truth)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_restorer_refuses_cuda_without_a_device(denoiser_dir):
    from histoblur.errors import InputError
    from histoblur.inference.restore import Restorer

    with pytest.raises(InputError, match="CUDA"):
        Restorer.load(denoiser_dir, "cuda")
    assert next(Restorer.load(denoiser_dir, "auto").model.parameters()).device.type == "cpu"


def test_restoration_training_resumes_where_it_stopped(sharp_dir, tmp_path):
    from histoblur.cli.main import main

    def config(out, epochs):
        (tmp_path / f"{out}.yaml").write_text(
            f"out: {tmp_path / out}\nsharp_dir: {sharp_dir}\n"
            "model: {arch: conv-denoiser, width: 4, depth: 2}\n"
            "schedule: {timesteps: 20}\ntile: 32\nbatch_size: 2\nmin_tissue: 0.0\n"
            f"epochs: {epochs}\nsteps_per_epoch: 2\nval_crops: 2\nval_steps: 3\nema: 0.9\n"
            "threads: 1\nworkers: 0\n"
        )
        return ["train", "restore", "--config", str(tmp_path / f"{out}.yaml")]

    assert main(config("straight", 2)) == 0
    assert main(config("resumed", 1)) == 0
    assert main([*config("resumed", 1), "--set", "epochs=2", "--resume"]) == 0
    straight, resumed = tmp_path / "straight" / "last", tmp_path / "resumed" / "last"
    assert (straight / "model.safetensors").read_bytes() == (
        resumed / "model.safetensors"
    ).read_bytes()
    assert len((tmp_path / "resumed" / "history.csv").read_text().splitlines()) == 3


def test_every_diffusion_start_but_the_artifact_is_a_classical_fill():
    # diffusion sits below inference, so STARTS names the fills of inference.inpaint itself
    from histoblur.diffusion.regional import STARTS
    from histoblur.inference.inpaint import FILLS

    assert ("artifact", *FILLS) == STARTS
