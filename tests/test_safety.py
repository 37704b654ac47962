"""Every command is safe on bad input and bad output paths: no input lost, no traceback.

One test per kind of defect, through the real entry point (``histoblur.cli.main.main``), on tiny
files the tests make. Each refusal is one sentence on stderr and a non-zero exit code.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histoblur.cli.main import main
from histoblur.errors import InputError
from histoblur.io.atomic import atomic_dir, remove_stale_temporaries
from histoblur.io.images import pixel_limit, read_image, write_image
from histoblur.models.hub import shipped_path

CLASSIFIER = str(shipped_path("default", "blur-type-classification"))
SEGMENTER = str(shipped_path("default", "blur-segmentation"))


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A blocky RGB texture with structure everywhere."""
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 220, (-(-h // 4), -(-w // 4), 3), dtype=np.uint8)
    return np.kron(base, np.ones((4, 4, 1), np.uint8))[:h, :w]


def digest(path: Path) -> str:
    """sha256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """The error printed by the last command: one line, ours, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("histoblur: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def huge_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header declares ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = zlib.compress(b"\0" * 64)
    idat = b"IDAT" + data
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(data))
        + idat
        + struct.pack(">I", zlib.crc32(idat))
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND"))
    )
    return path


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """A folder with two 48 x 64 RGB PNGs (a.png, b.png) and a mask (m.png)."""
    folder = tmp_path / "in"
    write_image(folder / "a.png", texture(48, 64, 1))
    write_image(folder / "b.png", texture(48, 64, 2))
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 255
    write_image(tmp_path / "m.png", mask)
    return folder


# -- outputs never overwrite inputs ----------------------------------------------------------


def guarded_commands(tmp: Path, images: Path) -> list[list[str]]:
    """Every command with an output that is (or would replace) one of its inputs."""
    a, b, mask = images / "a.png", images / "b.png", tmp / "m.png"
    write_image(images / "a_mask.png", np.zeros((48, 64), np.uint8))
    masks = tmp / "masks"
    masks.mkdir(exist_ok=True)
    write_image(masks / "a.png", np.zeros((48, 64), np.uint8))
    write_image(masks / "b.png", np.zeros((48, 64), np.uint8))
    write_image(masks / "a_mask.png", np.zeros((48, 64), np.uint8))
    return [
        ["synth", "blur", "--method", "gaussian", "--out", str(images), str(a)],
        ["synth", "blur", "--method", "gaussian", "--overwrite", "--out", str(images), str(a)],
        ["deblur", "--kind", "defocus", "--out", str(images), str(a)],
        ["deblur", "--kind", "defocus", "--overwrite", "--out", str(images), str(b)],
        ["segment", "--overwrite", "--out", str(images), str(a), str(images / "a_mask.png")],
        ["restore", str(a), "--mask", str(mask), "--out", str(a), "--overwrite"],
        ["restore", str(a), "--mask", str(mask), "--out", str(mask), "--overwrite"],
        ["restore", str(images), "--mask", str(masks), "--out", str(images), "--overwrite"],
        ["latent", "interpolate", str(a), str(b), "--alpha", "0.5", "--out", str(a)],
        ["latent", "deblur", str(a), str(b), "--alpha", "0.5", "--out", str(b), "--overwrite"],
        ["synth", "dataset", "--sharp", str(images), "--out", str(images), "--overwrite"],
        ["synth", "dataset", "--sharp", str(images), "--out", str(tmp), "--overwrite"],
        [
            "bench",
            "real-pairs",
            "--sharp",
            str(a),
            "--blurred",
            str(b),
            "--out",
            str(tmp),
            "--overwrite",
            "--tile",
            "32",
        ],  # fmt: skip
        [
            "calibrate",
            "--sharp",
            str(a),
            "--blurred",
            str(b),
            "--out",
            str(images),
            "--overwrite",
        ],  # fmt: skip
    ]


def test_no_command_writes_over_its_inputs(tmp_path, images, capsys):
    commands = guarded_commands(tmp_path, images)
    before = {p: digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    for command in commands:
        assert main(command) == 1, command
        line = one_error(capsys)
        assert "input" in line, (command, line)
        assert {p: digest(p) for p in tmp_path.rglob("*") if p.is_file()} == before, command
    a = str(images / "a.png")
    assert main(["qc", "--out", a, a]) == 2  # qc writes folders: a file is no output folder
    assert "not a folder" in capsys.readouterr().err
    assert main(["classify", "--out", a, a]) == 1
    one_error(capsys, "is the input")
    assert {p: digest(p) for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_links_to_an_input_are_refused(tmp_path, images, capsys, link):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "a.png"
    (os.symlink if link == "symlink" else os.link)(images / "a.png", target)
    before = digest(images / "a.png")
    blur = ["synth", "blur", "--method", "lens", "--overwrite", "--out", str(out)]
    assert main([*blur, str(images / "a.png")]) == 1
    one_error(capsys, "is the input")
    latent = ["latent", "interpolate", "--alpha", "0.5", "--overwrite", "--out", str(target)]
    assert main([*latent, str(images / "a.png"), str(images / "b.png")]) == 1
    one_error(capsys, "is the input")
    assert digest(images / "a.png") == before


def test_existing_outputs_are_replaced_only_with_overwrite(tmp_path, images, capsys):
    out = tmp_path / "out"
    blur = ["synth", "blur", "--method", "gaussian", "--out", str(out), str(images / "a.png")]
    assert main(blur) == 0
    first = digest(out / "a.png")
    assert main([*blur, "--param", "sigma=4"]) == 1
    one_error(capsys, "already exist", "--overwrite")
    assert digest(out / "a.png") == first
    assert main([*blur, "--param", "sigma=4", "--overwrite"]) == 0
    assert digest(out / "a.png") != first


# -- what a failed or killed run leaves ------------------------------------------------------


def test_stale_temporary_folders_are_removed_by_the_next_run(tmp_path, images):
    out = tmp_path / "ds"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    host = "".join(c for c in os.uname().nodename if c.isalnum())[:32]
    stale = tmp_path / f".ds.tmp-{dead}@{host}-abc"
    alive = tmp_path / f".ds.tmp-{os.getpid()}@{host}-abc"
    other_host = tmp_path / f".ds.tmp-{dead}@elsewhere-abc"
    for folder in (stale, alive, other_host):
        folder.mkdir()
        (folder / "part.png").write_bytes(b"x")
    command = ["synth", "dataset", "--sharp", str(images), "--out", str(out), "--n", "2"]
    assert main([*command, "--tile", "32"]) == 0
    assert not stale.exists()
    assert alive.exists() and other_host.exists()  # a live run, or one on another host
    assert remove_stale_temporaries(out) == []


def test_a_failed_block_leaves_no_temporary_folder(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "x").write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["segment", "deblur"])
def test_a_failing_later_input_keeps_the_list_of_finished_outputs(
    tmp_path, images, capsys, command
):
    (images / "c.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    extra = ["--kind", "defocus"] if command == "deblur" else []
    assert main([command, *extra, "--out", str(out), str(images)]) == 1
    one_error(capsys, "c.png")
    manifest = json.loads((out / f"{command}.json").read_text())
    assert [Path(r["image"]).name for r in manifest["images"]] == ["a.png", "b.png"]
    assert "c.png" in manifest["failed"]
    listed = {
        Path(v).name
        for row in manifest["images"]
        for key, v in row.items()
        if key != "image" and isinstance(v, str) and v.endswith(".png")
    }
    written = {p.name for p in out.iterdir()} - {f"{command}.json"}
    assert written <= listed | {"segment.json"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# -- resource limits --------------------------------------------------------------------------


def test_declared_size_is_checked_before_decoding(tmp_path, capsys):
    bomb = huge_png(tmp_path / "bomb.png", 20_000, 20_000)
    giant = huge_png(tmp_path / "giant.png", 100_000, 100_000)
    with pytest.raises(InputError, match="--max-pixels"):
        read_image(giant)
    for path in (bomb, giant):
        assert main(["segment", "--out", str(tmp_path / "out"), str(path)]) == 1
        one_error(capsys, "above the limit of 100,000,000 pixels", "--max-pixels")
    assert not (tmp_path / "out").exists()
    small = write_image(tmp_path / "small.png", texture(48, 64))
    with pytest.raises(InputError, match="limit"), pixel_limit(1000):
        read_image(small)
    blur = ["synth", "blur", "--method", "gaussian", "--out", str(tmp_path / "o"), str(small)]
    assert main([*blur, "--max-pixels", "1000"]) == 1
    one_error(capsys, "64 x 48 px", "limit of 1,000 pixels", "--max-pixels")
    assert main(blur) == 0


def test_the_pil_limit_is_not_lifted_for_the_process(tmp_path):
    limit = Image.MAX_IMAGE_PIXELS
    read_image(write_image(tmp_path / "x.png", texture(16, 16)))
    from histoblur.wsi.readers import open_slide

    open_slide(tmp_path / "x.png").close()
    assert limit == Image.MAX_IMAGE_PIXELS and limit is not None


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--steps", "1000000", "--jump-length", "0"], "at most the model's"),
        (
            ["--steps", "0", "--strength", "1", "--jump-length", "10", "--resamples", "100000"],
            "denoiser passes per window",
        ),
    ],
)
def test_restoration_budget_is_bounded(tmp_path, images, capsys, extra, needle):
    out = tmp_path / "r.png"
    command = ["restore", str(images / "a.png"), "--mask", str(tmp_path / "m.png"), "--out"]
    assert main([*command, str(out), *extra]) == 1
    one_error(capsys, needle)
    assert not out.exists()


def test_latent_sweep_is_bounded(tmp_path, images, capsys):
    a, b = str(images / "a.png"), str(images / "b.png")
    out = str(tmp_path / "s.png")
    assert main(["latent", "interpolate", a, b, "--sweep", "100000", "--out", out]) == 1
    one_error(capsys, "between 2 and 64")


# -- checkpoints ------------------------------------------------------------------------------


def test_wrong_task_checkpoints_are_refused(tmp_path, images, capsys):
    a = str(images / "a.png")
    out = str(tmp_path / "out")
    assert main(["segment", "--model", CLASSIFIER, "--out", out, a]) == 1
    one_error(capsys, "not a blur segmentation model", "blur-type-classification")
    detect = ["restore", a, "--detect", "segmenter", "--detector-model", CLASSIFIER]
    assert main([*detect, "--out", str(tmp_path / "r.png")]) == 1
    one_error(capsys, "not a blur segmentation model")
    evaluate = ["evaluate", "segmentation", "--negatives", str(images), "--model", CLASSIFIER]
    assert main(evaluate) == 1
    one_error(capsys, "not a blur segmentation model")
    assert main(["qc", "--model", CLASSIFIER, "--out", out, a]) == 2
    assert "not a blur segmentation model" in capsys.readouterr().err
    assert main(["classify", "--model", SEGMENTER, "--out", str(tmp_path / "c.csv"), a]) == 1
    one_error(capsys, "not a blur-type classifier")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c: c.pop("task"), "names no task"),
        (lambda c: c["inference"].update(threshold="high"), "not a number"),
        (lambda c: c["inference"].update(threshold=[0.5]), "not a number"),
    ],
)
def test_bad_checkpoint_configs_are_refused(tmp_path, images, capsys, edit, needle):
    model = tmp_path / "model"
    model.mkdir()
    config = json.loads((Path(SEGMENTER) / "config.json").read_text())
    edit(config)
    (model / "config.json").write_text(json.dumps(config))
    (model / "model.safetensors").write_bytes((Path(SEGMENTER) / "model.safetensors").read_bytes())
    out = str(tmp_path / "out")
    assert main(["segment", "--model", str(model), "--out", out, str(images / "a.png")]) == 1
    one_error(capsys, needle)


def test_a_pickled_checkpoint_is_one_sentence_and_details_need_verbose(tmp_path, images, capsys):
    import pickle

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text((Path(SEGMENTER) / "config.json").read_text())

    class Payload:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    (tmp_path / "model.pt").write_bytes(pickle.dumps({"w": Payload()}))
    (tmp_path / "config.json").write_text((model / "config.json").read_text())
    command = ["segment", "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "o")]
    assert main([*command, str(images / "a.png")]) == 1
    captured = capsys.readouterr()
    assert "pickle code ran" not in captured.out
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "weights_only" in lines[0] and len(lines[0]) < 240, lines
    assert main(["-v", *command, str(images / "a.png")]) == 1
    assert "caused by" in capsys.readouterr().err


# -- option values and output paths -----------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"), [("--photons", "-1"), ("--read-noise", "2"), ("--jpeg-quality", "0")]
)
def test_out_of_range_degradation_is_one_sentence(tmp_path, images, capsys, option, value):
    command = ["synth", "blur", "--method", "gaussian", "--out", str(tmp_path / "o")]
    assert main([*command, option, value, str(images / "a.png")]) == 1
    one_error(capsys, f"Invalid option {option}")
    assert not (tmp_path / "o").exists()


def test_file_outputs_refuse_folders_and_unknown_suffixes(tmp_path, images, capsys):
    a, b, mask = str(images / "a.png"), str(images / "b.png"), str(tmp_path / "m.png")
    folder = tmp_path / "existing"
    folder.mkdir()
    cases = [
        (["classify", "--out", str(folder), a], "is a folder"),
        (["latent", "interpolate", a, b, "--alpha", "0.5", "--out", str(folder)], "is a folder"),
        (["restore", a, "--mask", mask, "--out", str(folder)], "is a folder"),
        (
            ["latent", "interpolate", a, b, "--alpha", "0.5", "--out", str(tmp_path / "x.xyz")],
            "must end in",
        ),  # fmt: skip
        (["latent", "deblur", a, b, "--alpha", "0.5", "--out", str(tmp_path / "x")], "must end in"),
        (["restore", a, "--mask", mask, "--out", str(tmp_path / "r")], "must end in"),
        (["classify", "--out", str(tmp_path / "c.txt"), a], "must end in .csv"),
        (
            [
                "restore",
                str(images),
                "--mask",
                str(tmp_path / "m.png"),
                "--out",
                str(tmp_path / "r"),
            ],
            "--mask must be a folder",
        ),  # fmt: skip
    ]
    (tmp_path / "file.png").write_bytes(b"")
    masks = tmp_path / "masks"
    masks.mkdir()
    cases.append(
        (
            ["restore", str(images), "--mask", str(masks), "--out", str(tmp_path / "file.png")],
            "--out must be a folder",
        )  # fmt: skip
    )
    evaluate = ["evaluate", "segmentation", "--pred", str(masks), "--truth", str(masks)]
    cases.append(([*evaluate, "--out", str(folder)], "is a folder"))
    cases.append(([*evaluate, "--out", str(tmp_path / "s.txt")], "must end in .csv"))
    (tmp_path / "s.csv").mkdir()
    cases.append(([*evaluate, "--out", str(tmp_path / "s.csv")], "is a folder"))
    for command, needle in cases:
        assert main(command) == 1, command
        one_error(capsys, needle)


def test_demo_and_calibrate_check_out_before_the_work(tmp_path, images, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker)]) == 1
    one_error(capsys, "is a file")
    assert main(["demo", "--out", str(blocker / "demo")]) == 1
    one_error(capsys)
    assert main(["demo", "--seed", "-1", "--out", str(tmp_path / "d")]) == 1
    one_error(capsys, "--seed")
    calibrate = ["calibrate", "--sharp", str(images / "a.png"), "--blurred", str(images / "b.png")]
    assert main([*calibrate, "--out", str(blocker / "cal")]) == 1
    one_error(capsys)
    assert blocker.read_text() == "x"


def test_an_unreachable_scheduler_is_a_usage_error(tmp_path, images, monkeypatch, capsys):
    import histoblur.inference.cohort as cohort

    monkeypatch.setattr(cohort, "SCHEDULER_TIMEOUT_S", 1)
    command = ["qc", "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "qc")]
    assert main([*command, str(images / "a.png")]) == 2
    err = capsys.readouterr().err
    assert "Cannot reach the Dask scheduler" in err and "Traceback" not in err


# -- images that are read wrongly or cannot be judged ------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    picture = np.zeros((200, 256, 3), np.uint8)
    picture[:20, :40] = 255  # a white block top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    Image.fromarray(picture).save(tmp_path / "o.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "o.jpg")
    assert image.shape == (256, 200, 3)
    assert image[:40, -20:].mean() > 200 and image[-40:, :20].mean() < 50


def test_truncated_tiff_is_called_truncated(tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "t.tif", texture(64, 64), tile=(16, 16), compression="zlib")
    data = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_image(tmp_path / "cut.tif")


def test_segment_tile_must_be_usable(tmp_path, images, capsys):
    out = str(tmp_path / "out")
    assert main(["segment", "--tile", "0", "--out", out, str(images / "a.png")]) == 1
    one_error(capsys, "--tile must be between")
    assert main(["segment", "--overlap", "500", "--out", out, str(images / "a.png")]) == 1
    one_error(capsys, "--overlap")


def test_images_too_small_to_judge_are_marked(tmp_path, capsys):
    write_image(tmp_path / "dot.png", texture(1, 1))
    write_image(tmp_path / "strip.png", texture(3, 400))
    write_image(tmp_path / "ok.png", texture(64, 64))
    out = tmp_path / "c.csv"
    assert main(["classify", "--out", str(out), str(tmp_path)]) == 0
    rows = {r.split(",")[0].split("/")[-1]: r.split(",") for r in out.read_text().splitlines()}
    assert rows["dot.png"][1] == "too_small" and rows["strip.png"][1] == "too_small"
    assert rows["ok.png"][1] != "too_small" and rows["dot.png"][-1] == "0"


def test_folder_outputs_never_replace_a_file_or_hard_links_of_inputs(tmp_path, images, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    a, b = images / "a.png", images / "b.png"
    dataset = ["synth", "dataset", "--sharp", str(images), "--n", "2", "--tile", "32"]
    bench = ["bench", "real-pairs", "--sharp", str(a), "--blurred", str(b), "--tile", "32"]
    for command in (dataset, bench):
        assert main([*command, "--out", str(notes), "--overwrite"]) == 1
        one_error(capsys, "is an existing file")
        assert notes.read_text() == "keep me"
    linked = tmp_path / "linked"
    linked.mkdir()
    os.link(a, linked / "x.png")
    assert main([*bench, "--n", "2", "--out", str(linked), "--overwrite"]) == 1
    one_error(capsys, "or a link to it")
    assert (linked / "x.png").is_file()


@pytest.mark.parametrize(
    "command",
    [
        ["synth", "blur", "--method", "gaussian", "--photons", "1e30"],
        ["segment", "--tile", "100000"],
    ],
)
def test_options_too_large_are_refused(tmp_path, images, capsys, command):
    assert main([*command, "--out", str(tmp_path / "o"), str(images / "a.png")]) == 1
    one_error(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "line",
    [
        "masks: {vertices: [3, 100000000]}",
        "masks: {count: [100000, 100000]}",
        "masks: {size: [-1, 100]}",
        "degrade: {photons: [1.0e+30, 1.0e+30], noise_p: 1.0}",
        "lr: .inf",
    ],
)
def test_unbounded_config_values_are_refused(tmp_path, images, capsys, line):
    config = tmp_path / "c.yaml"
    config.write_text(line + "\n")
    if line.startswith("lr"):
        command = ["train", "segmenter", "--config", str(config)]
    else:
        command = ["synth", "dataset", "--sharp", str(images), "--config", str(config)]
    assert main([*command, "--set", f"out={tmp_path / 'o'}"] if line.startswith("lr") else
                [*command, "--out", str(tmp_path / "o")]) == 1  # fmt: skip
    one_error(capsys, "Invalid")
    assert not (tmp_path / "o").exists()


def test_a_manifest_lists_what_finished_when_the_run_stops(tmp_path):
    from histoblur.cli.common import Manifest, json_manifest, recorded
    from histoblur.errors import InputError as Stop

    manifest = Manifest(tmp_path / "run.json", json_manifest({"model": "m"}), every_s=3600)
    with pytest.raises(KeyboardInterrupt), recorded(manifest):
        manifest.add({"image": "a.png"})  # the first row is written at once
        assert json.loads((tmp_path / "run.json").read_text())["images"] == [{"image": "a.png"}]
        manifest.add({"image": "b.png"})  # within every_s: kept in memory
        raise KeyboardInterrupt
    saved = json.loads((tmp_path / "run.json").read_text())
    assert [r["image"] for r in saved["images"]] == ["a.png", "b.png"]
    assert saved["failed"] == "interrupted"
    empty = Manifest(tmp_path / "none.json", json_manifest({}))
    with pytest.raises(Stop), recorded(empty):
        raise Stop("bad first image")
    assert not (tmp_path / "none.json").exists()
