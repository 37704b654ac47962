"""``histoblur qc`` never mixes outputs with inputs, refuses bad options in one sentence, names
unreadable slides in histoblur's words, and keeps every slide of an --out in its cohort table."""

import csv
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from histoblur.cli.main import main
from histoblur.errors import InputError, OutputError, ParameterError
from histoblur.inference import cohort
from histoblur.inference.cohort import check_out, find_slides, max_workers, run_cohort
from histoblur.inference.qc import QCConfig, SlideQC, qc_slide
from histoblur.io.images import write_image
from histoblur.synthesis.slide import make_synthetic_slide
from histoblur.wsi.pyramid import write_pyramidal_tiff
from histoblur.wsi.readers import ArrayReader

WSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "wsi"
OPENSLIDE_WORDS = ("Couldn't", "TIFFRGBAImageGet", "ZIPDecode", "Reading ", "scanline")


def tiny_slide(path: Path, seed: int = 0) -> Path:
    """A 256 x 192 pyramidal TIFF at 0.5 um/px with a blurred rectangle (one window)."""
    slide = make_synthetic_slide((256, 192), seed=seed, blur_radius=8)
    return write_pyramidal_tiff(path, slide.source, slide.size, mpp=0.5)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Two tiny slides, copied into each test's own folders."""
    root = tmp_path_factory.mktemp("qc_sources")
    return [tiny_slide(root / "s0.tif", 0), tiny_slide(root / "s1.tif", 1)]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with its content digest (folders: '')."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


def one_error(capsys, *needles: str) -> str:
    """The single stderr line of a refusal (no traceback), holding every needle."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("histoblur: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def qc(*args) -> int:
    return main(["qc", *map(str, args)])


# -- 1. --out and the inputs -------------------------------------------------------------------


def test_out_that_is_holds_or_lies_inside_an_input_folder_is_refused(tmp_path, source, capsys):
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(source[0], slides / "s0.tif")
    (tmp_path / "link").symlink_to(slides)
    before = snapshot(tmp_path)
    cases = [
        (slides, slides, "is the input folder"),
        (slides, Path(f"{slides}/./"), "is the input folder"),
        (slides, tmp_path / "link", "is the input folder"),  # a link to it
        (slides, slides / "qc", "lies inside the input folder"),
        (slides, tmp_path / "link" / "qc", "lies inside the input folder"),
        (slides, tmp_path, "holds the input folder"),  # an input folder inside --out
        (slides / "s0.tif", slides, "holds the input slide"),  # --out beside the slide
    ]
    for given, out, words in cases:
        assert qc(given, "--out", out) == 2, (given, out)
        one_error(capsys, words, "choose an --out")
        assert snapshot(tmp_path) == before, (given, out)  # nothing written, not even a folder
    with pytest.raises(OutputError, match="holds the input slide"):  # the library refuses too
        run_cohort([slides / "s0.tif"], slides, QCConfig())
    nested = tmp_path / "nested" / "s1"
    nested.mkdir(parents=True)
    shutil.copy(source[1], nested / "s1.tif")
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="holds the input"):  # and so does one slide's folder
        qc_slide(nested / "s1.tif", nested.parent, QCConfig())  # nested/ would be replaced
    assert snapshot(tmp_path) == before


def test_a_rerun_never_reads_its_own_outputs_as_slides(tmp_path, source, capsys):
    slides, out = tmp_path / "slides", tmp_path / "qc"
    slides.mkdir()
    shutil.copy(source[0], slides / "s0.tif")
    assert qc(slides, "--out", out) == 0
    # outputs of an earlier run (and a killed run's temporary folder) inside an input folder
    shutil.copytree(out / "s0", slides / "old" / "s0")
    shutil.copytree(out / "s0", slides / ".s0.tmp-1@host-abc")
    write_image(slides / ".hidden.png", np.zeros((8, 8, 3), np.uint8))
    assert find_slides([slides]) == [slides / "s0.tif"]
    with pytest.raises(InputError, match="QC outputs are not slides"):
        find_slides([out])
    capsys.readouterr()
    assert qc(slides, "--out", out) == 0  # resumed: one slide, already done
    rows = list(csv.DictReader((out / "cohort.csv").open()))
    assert [r["stem"] for r in rows] == ["s0"] and not rows[0]["error"]
    assert "1 of 1 slide(s) done" in capsys.readouterr().err
    assert find_slides([out / "s0" / "thumbnail.png"])  # a file named explicitly is taken


def test_cohort_files_histoblur_did_not_write_are_never_replaced(tmp_path, source, capsys):
    for name, text in (("cohort.csv", "patient,grade\n1,2\n"), ("index.html", "<p>mine</p>")):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        (out / name).write_text(text)
        assert qc(source[0], "--out", out) == 2
        one_error(capsys, f"{name} that histoblur qc writes")
        assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == text


# -- 2. numeric options ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--workers", "0", "--workers must be between 1 and"),
        ("--workers", "-3", "--workers must be between 1 and"),
        ("--workers", "100000", "--workers must be between 1 and"),
        ("--batch-size", "0", "--batch-size"),
        ("--batch-size", "257", "--batch-size"),
        ("--readers", "0", "--readers"),
        ("--readers", "33", "--readers"),
        ("--mpp", "nan", "--mpp: Input should be a finite number"),
        ("--mpp", "-1", "--mpp"),
        ("--mpp", "inf", "--mpp"),
        ("--mpp", "51", "--mpp"),
        ("--slide-mpp", "0", "--slide-mpp"),
        ("--slide-mpp", "nan", "--slide-mpp"),
        ("--threshold", "1", "--threshold"),
        ("--threshold", "-0.1", "--threshold"),
        ("--threshold", "nan", "--threshold"),
        ("--flag-above", "1", "--flag-above"),
        ("--flag-above", "-0.1", "--flag-above"),
        ("--flag-above", "nan", "--flag-above"),
    ],
)
def test_out_of_range_options_are_one_sentence(tmp_path, source, capsys, option, value, words):
    out = tmp_path / "qc"
    assert qc(source[0], "--out", out, option, value) == 2
    one_error(capsys, words)
    assert not out.exists()


def test_cuda_without_a_gpu_is_a_usage_error(tmp_path, source, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert qc(source[0], "--out", tmp_path / "qc", "--device", "cuda") == 2
    one_error(capsys, "no CUDA device is available")
    assert not (tmp_path / "qc").exists()


def test_workers_are_capped_in_the_library_too(tmp_path, source):
    assert 4 <= max_workers() <= 32
    with pytest.raises(ParameterError, match=f"between 1 and {max_workers()}"):
        run_cohort([source[0]], tmp_path / "qc", QCConfig(), workers=max_workers() + 1)
    assert not (tmp_path / "qc").exists()


@pytest.mark.parametrize("args", [["--bogus"], ["--workers", "1.5"], ["--batch-size", "x"]])
def test_unknown_or_malformed_options_are_usage_errors(tmp_path, source, capsys, args):
    with pytest.raises(SystemExit) as exit_:
        qc(source[0], "--out", tmp_path / "qc", *args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err and not (tmp_path / "qc").exists()


def test_a_working_resolution_far_finer_than_the_slide_is_refused():
    reader = ArrayReader(np.full((64, 64, 3), 200, np.uint8), mpp=1.0)
    with pytest.raises(InputError, match="pass an --mpp of at least 0.25"):
        SlideQC(reader, None, QCConfig(mpp=0.1))  # 10x enlarged: 100x the working pixels
    assert SlideQC(reader, None, QCConfig(mpp=0.25)).scale == 0.25  # 4x is allowed


# -- 3. unreadable slides in histoblur's words --------------------------------------------------


def damaged_tiles(source: Path, path: Path) -> Path:
    """A copy of ``source`` whose level-0 tile data is overwritten: it opens, reads fail."""
    data = bytearray(source.read_bytes())
    with tifffile.TiffFile(source) as tif:
        page = tif.pages[0]
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            data[offset : offset + count] = b"\xff" * count
    path.write_bytes(bytes(data))
    return path


def fake_dicom(path: Path) -> Path:
    path.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p, s: fake_dicom(p / "scan.dcm"), "is DICOM but not a whole-slide image"),
        (lambda p, s: damaged_tiles(s, p / "damaged.tif"), "failed to decode part of its pixels"),
        (lambda p, s: (p / "text.dcm").write_text("no") and p / "text.dcm", "not a DICOM file"),
    ],
)
def test_unreadable_slides_are_one_histoblur_sentence(tmp_path, source, make, words):
    path = make(tmp_path, source[0])
    with pytest.raises(InputError) as error:
        qc_slide(path, tmp_path / "qc", QCConfig())
    message = str(error.value)
    assert words in message and str(path) in message and len(message.splitlines()) == 1
    assert not any(w in message for w in OPENSLIDE_WORDS), message
    assert not (tmp_path / "qc" / path.stem).exists()


def test_verbose_shows_the_openslide_cause_of_a_failed_slide(tmp_path, source, capsys):
    slide = damaged_tiles(source[0], tmp_path / "damaged.tif")
    assert qc(slide, "--out", tmp_path / "qc") == 3
    quiet = capsys.readouterr().err
    assert "failed to decode part of its pixels" in quiet
    assert not any(w in quiet for w in OPENSLIDE_WORDS), quiet
    assert main(["-v", "qc", str(slide), "--out", str(tmp_path / "qc")]) == 3
    loud = capsys.readouterr().err
    assert "caused by OpenSlideError" in loud and "ZIPDecode" in loud
    row = next(csv.DictReader((tmp_path / "qc" / "cohort.csv").open()))
    assert "failed to decode" in row["error"] and "ZIPDecode" not in row["error"]


@pytest.mark.skipif(not (WSI / "small_dicom.dcm").is_file(), reason="the real DICOM is absent")
def test_the_real_dicom_slide_reads_and_asks_for_its_resolution(tmp_path):
    # it opens (its frames tile the image) but states no usable pixel spacing
    with pytest.raises(InputError, match="states no \\(plausible\\) microns per pixel"):
        qc_slide(WSI / "small_dicom.dcm", tmp_path, QCConfig())
    assert not any(tmp_path.iterdir())  # nothing half-written


# -- 4. re-runs into the same --out keep every slide's row --------------------------------------


def test_other_slides_into_the_same_out_are_added_to_the_cohort(tmp_path, source):
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "qc"
    a.mkdir(), b.mkdir()
    for path in source:
        shutil.copy(path, a / path.name)
    shutil.copy(source[1], b / "s0.tif")  # another slide with the stem of a/s0.tif
    (a / "broken.svs").write_text("not a slide")
    run_cohort([a / "s0.tif", a / "broken.svs"], out, QCConfig())
    run_cohort([a / "s1.tif"], out, QCConfig())
    table = list(csv.DictReader((out / "cohort.csv").open()))
    assert [(r["stem"], bool(r["error"])) for r in table] == [
        ("broken", True),
        ("s0", False),
        ("s1", False),
    ]
    index = (out / "index.html").read_text()
    assert "s0/report.html" in index and "s1/report.html" in index and "broken" in index
    # same stem, another slide: an error row, never a silent "already done"
    done = (out / "s0" / "summary.json").read_bytes()
    rows = run_cohort([b / "s0.tif"], out, QCConfig())
    assert "already holds the QC of" in rows[0]["error"] and not rows[0].get("skipped")
    assert (out / "s0" / "summary.json").read_bytes() == done
    table = list(csv.DictReader((out / "cohort.csv").open()))
    assert [(r["stem"], r["slide"], bool(r["error"])) for r in table] == [
        ("broken", str(a / "broken.svs"), True),
        ("s0", str(a / "s0.tif"), False),
        ("s0", str(b / "s0.tif"), True),
        ("s1", str(a / "s1.tif"), False),
    ]
    # the broken slide repaired: its error row goes, the others stay
    shutil.copy(source[0], a / "broken.svs")
    os.replace(a / "broken.svs", a / "broken.tif")
    run_cohort([a / "broken.tif"], out, QCConfig())
    table = list(csv.DictReader((out / "cohort.csv").open()))
    assert [(r["stem"], Path(r["slide"]).name) for r in table] == [
        ("broken", "broken.tif"),
        ("broken", "broken.svs"),  # still not done: that file is still not a slide
        ("s0", "s0.tif"),
        ("s0", "s0.tif"),
        ("s1", "s1.tif"),
    ]


def test_a_failed_slide_fixed_in_place_loses_its_error_row(tmp_path, source):
    out, slide = tmp_path / "qc", tmp_path / "s0.tif"
    slide.write_bytes(b"")
    assert run_cohort([slide], out, QCConfig())[0]["error"]
    shutil.copy(source[0], slide)
    run_cohort([tmp_path / "." / "s0.tif"], out, QCConfig())  # written differently: same file
    table = list(csv.DictReader((out / "cohort.csv").open()))
    assert [(r["stem"], r["error"]) for r in table] == [("s0", "")]


# -- the bad-input battery ---------------------------------------------------------------------


def test_bad_inputs_are_usage_errors_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "qc"
    for args, words in [
        ([], "No slides given"),
        ([tmp_path / "missing.svs"], "does not exist"),
        ([tmp_path / "empty"], "holds no slide files"),
    ]:
        assert qc(*args, "--out", out) == 2
        one_error(capsys, words)
    write_image(tmp_path / "tile.png", np.full((8, 8, 3), 200, np.uint8))
    for bad, words in [
        (tmp_path / "file.txt", "is not a folder"),
        (tmp_path / "file.txt" / "sub", "Cannot create output folder"),
    ]:
        assert qc(tmp_path / "tile.png", "--out", bad) == 2
        one_error(capsys, words)
    assert not out.exists() and (tmp_path / "file.txt").read_text() == "x"


def test_an_unwritable_out_is_one_sentence(tmp_path, capsys, monkeypatch):
    write_image(tmp_path / "tile.png", np.full((8, 8, 3), 200, np.uint8))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cohort.tempfile, "TemporaryFile", refuse)  # e.g. a read-only mount
    assert qc(tmp_path / "tile.png", "--out", tmp_path / "qc") == 2
    one_error(capsys, "Cannot write in the output folder", "Permission denied")
    with pytest.raises(OutputError, match="Cannot write in the output folder"):
        run_cohort([tmp_path / "tile.png"], tmp_path / "qc2", QCConfig())


def test_broken_files_are_error_rows_and_the_others_finish(tmp_path, source, capsys):
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(source[0], slides / "good.tif")
    (slides / "text.svs").write_text("hello, I am not a slide\n")
    (slides / "zero.svs").write_bytes(b"")
    (slides / "empty.tif").write_bytes(b"")
    data = source[1].read_bytes()
    (slides / "half.tif").write_bytes(data[: len(data) // 2])
    (slides / "head.tif").write_bytes(data[:200])
    out = tmp_path / "qc"
    assert qc(slides, "--out", out) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "5 of 6" not in err and "1 of 6 slide(s) done" in err
    rows = {r["stem"]: r for r in csv.DictReader((out / "cohort.csv").open())}
    assert set(rows) == {"good", "text", "zero", "empty", "half", "head"}
    assert not rows["good"]["error"]
    for stem in ("text", "zero", "empty", "half", "head"):
        error = rows[stem]["error"]
        assert stem in error and len(error.splitlines()) == 1 and "Error:" not in error, error
        assert not any(w in error for w in OPENSLIDE_WORDS), error


def test_check_out_accepts_a_separate_folder(tmp_path, source):
    assert check_out(tmp_path / "qc", [source[0], source[0].parent]) == tmp_path / "qc"
    assert not (tmp_path / "qc").exists()
