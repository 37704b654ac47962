"""Cohorts that are always right: a slide is done only with the same parameters, the cohort
table and index always cover every slide of --out, nothing under --out is ever an input,
--slide-mpp is a fallback (--force-slide-mpp, --slide-mpp-csv), slides without tissue and
flagged slides have a status, and a killed cohort resumes with nothing lost or doubled."""

import copy
import csv
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from histoblur.cli.main import main
from histoblur.inference import cohort
from histoblur.inference.cohort import find_slides, rerun_reason, run_cohort
from histoblur.inference.qc import OUTPUT_FILES, QCConfig, result_parameters
from histoblur.inference.segment import TASK, Segmenter
from histoblur.io.atomic import owner_tag
from histoblur.io.images import write_image
from histoblur.models.hub import load_pretrained
from histoblur.synthesis.slide import make_synthetic_slide
from histoblur.wsi.pyramid import write_pyramidal_tiff
from test_qc_safety import one_error  # the one-sentence refusal check, shared


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Two small slides with tissue (0.5 um/px, 2 windows each), a glass-only slide, and the
    tissue of the first as a PNG that states no resolution."""
    root = tmp_path_factory.mktemp("cohort_sources")
    made = {}
    for i, stem in enumerate(("a", "b")):
        slide = make_synthetic_slide((384, 256), seed=i, blur_radius=8)
        made[stem] = write_pyramidal_tiff(root / f"{stem}.tif", slide.source, slide.size, mpp=0.5)
        if stem == "a":
            whole = slide.source(1, 0, 0, *slide.size)  # level 0, the whole slide
            made["plain"] = write_image(root / "plain.png", whole)
    glass = np.full((256, 384, 3), 243, np.uint8)
    made["glass"] = write_pyramidal_tiff(root / "glass.tif", glass, mpp=0.5)
    return made


def copies(folder: Path, source: dict, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(source[n], folder / source[n].name)) for n in names]


def qc(*args) -> int:
    return main(["qc", *map(str, args)])


def table(out: Path) -> list[dict[str, str]]:
    with open(out / "cohort.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def summary(out: Path, stem: str) -> dict:
    return json.loads((out / stem / "summary.json").read_text())


def index_rows(out: Path) -> dict[str, str]:
    """stem -> status of each row of OUT/index.html."""
    body = (out / "index.html").read_text().split("<tbody>")[1]
    return dict(
        (stem, state)
        for state, stem in re.findall(
            r"<tr class='\w+' data-status='(\w+)'><td data-value='([^']*)'", body
        )
    )


# -- 1. resume compares the parameters that shape the results ----------------------------------


def test_a_slide_is_done_only_when_its_parameters_match(tmp_path, source, capsys):
    (slide,) = copies(tmp_path / "in", source, "a")
    out = tmp_path / "qc"
    assert qc(slide, "--out", out) == 0
    stored = summary(out, "a")
    params = stored["parameters"]
    assert re.fullmatch(r"[0-9a-f]{64}", params["model_sha256"])
    assert (
        params["model"] == "default" and params["histoblur_version"] == stored["histoblur_version"]
    )
    assert (params["threshold"], params["slide_mpp"], params["working_mpp"]) == (0.55, 0.5, 0.5)
    assert stored["metadata_mpp"] == 0.5
    written = (out / "a" / "summary.json").stat().st_mtime_ns
    capsys.readouterr()

    assert qc(slide, "--out", out) == 0  # same parameters: done
    assert "a: " in (err := capsys.readouterr().err) and "(already done)" in err
    assert (out / "a" / "summary.json").stat().st_mtime_ns == written

    assert qc(slide, "--out", out, "--threshold", "0.8") == 0  # another threshold: QC'd again
    err = capsys.readouterr().err
    assert "a: QC again: threshold changed (0.55 -> 0.8)" in err and "already done" not in err
    assert summary(out, "a")["threshold"] == summary(out, "a")["parameters"]["threshold"] == 0.8
    assert table(out)[0]["threshold"] == "0.8"

    assert qc(slide, "--out", out, "--threshold", "0.8") == 0
    assert "(already done)" in capsys.readouterr().err

    assert qc(slide, "--out", out, "--threshold", "0.8", "--mpp", "1") == 0
    err = capsys.readouterr().err
    assert "a: QC again: working_mpp changed (0.5 -> 1)" in err and "threshold" not in err
    assert summary(out, "a")["working_size"] == [192, 128]

    written = (out / "a" / "summary.json").stat().st_mtime_ns
    assert qc(slide, "--out", out, "--threshold", "0.8", "--mpp", "1", "--overwrite") == 0
    assert "already done" not in capsys.readouterr().err
    assert (out / "a" / "summary.json").stat().st_mtime_ns != written
    assert len(table(out)) == 1


def test_the_rerun_reason_names_each_changed_parameter():
    segmenter = Segmenter.load("default", tile=64)
    done = {"metadata_mpp": 0.5, "parameters": result_parameters(QCConfig(), segmenter, 0.5)}
    slide = Path("a.svs")
    assert rerun_reason(done, slide, QCConfig(), segmenter) == ""
    # run options leave the results as they are
    same = QCConfig(batch_size=1, readers=1, device="cpu", flag_above=0.5, slide_mpp=0.52)
    assert rerun_reason(done, slide, same, segmenter) == ""
    for config, words in [
        (QCConfig(min_region_um2=0), "min_region_um2 changed (2000 -> 0)"),
        (QCConfig(tissue_mpp=4), "tissue_mpp changed (8 -> 4)"),
        (QCConfig(min_tissue=0.2), "min_tissue changed (0.05 -> 0.2)"),
        (QCConfig(geojson_mpp=1), "geojson_mpp changed (2 -> 1)"),
        (QCConfig(thumbnail_side=800), "thumbnail_side changed (1600 -> 800)"),
        (QCConfig(model="mine"), "model changed (default -> mine)"),
        (
            QCConfig(slide_mpp=0.25, force_slide_mpp=True),
            "slide_mpp changed (0.5 -> 0.25)",  # the working mpp stays the model's 0.5
        ),
        (QCConfig(slide_mpps={"a.svs": 1.0}, force_slide_mpp=True), "working_mpp changed"),
    ]:
        assert words in rerun_reason(done, slide, config, segmenter), config
    wider = Segmenter.load("default", tile=128)
    assert rerun_reason(done, slide, QCConfig(), wider) == "tile changed (64 -> 128), " + (
        "overlap changed (16 -> 32)"
    )
    network, checkpoint, _ = load_pretrained("default", TASK)
    network = copy.deepcopy(network)
    with torch.no_grad():
        next(network.parameters()).add_(1e-3)  # other weights, same everything else
    retrained = Segmenter(network, checkpoint, tile=64)
    assert rerun_reason(done, slide, QCConfig(), retrained).startswith("model_sha256 changed (")
    assert "older histoblur" in rerun_reason({"parameters": {}}, slide, QCConfig(), segmenter)
    old = {"metadata_mpp": None, "parameters": done["parameters"]}  # was given --slide-mpp
    assert "no longer given" in rerun_reason(old, slide, QCConfig(), segmenter)


def test_a_cohort_made_on_dask_workers_is_done_for_an_in_process_run(tmp_path, source):
    slides = copies(tmp_path / "in", source, "a", "glass")
    out = tmp_path / "qc"
    rows = run_cohort(slides, out, QCConfig(), workers=2)
    assert [r["error"] for r in rows] == ["", ""]
    seen = []
    run_cohort(slides, out, QCConfig(), progress=seen.append)
    assert [bool(r.get("skipped")) for r in seen] == [True, True]  # same weights digest


# -- 2. cohort.csv and index.html always cover every slide of OUT --------------------------------


def test_a_subset_rerun_keeps_every_slide_in_the_table_and_the_index(tmp_path, source, capsys):
    a, b = copies(tmp_path / "in", source, "a", "b")
    out = tmp_path / "qc"
    assert qc(a, b, "--out", out) == 0
    assert qc(b, "--out", out, "--threshold", "0.8") == 0  # b alone, QC'd again
    rows = {r["stem"]: r for r in table(out)}
    assert set(rows) == {"a", "b"}
    assert (rows["a"]["threshold"], rows["b"]["threshold"]) == ("0.55", "0.8")
    assert index_rows(out).keys() == {"a", "b"}
    page = (out / "index.html").read_text()
    assert "href='a/report.html'" in page and "href='b/report.html'" in page
    assert "2 slides, 2 processed, 0 failed" in page
    # both rebuilt from the summaries when lost (a run killed while writing them)
    (out / "cohort.csv").unlink()
    (out / "index.html").unlink()
    assert qc(a, "--out", out) == 0
    assert [r["stem"] for r in table(out)] == ["a", "b"] and index_rows(out).keys() == {"a", "b"}


# -- 3. nothing under OUT is an input --------------------------------------------------------------


def test_nothing_under_out_is_ever_taken_for_a_slide(tmp_path, source, capsys):
    slides = tmp_path / "slides"
    (slide,) = copies(slides, source, "a")
    before = sorted(tmp_path.rglob("*"))
    assert qc(slides, "--out", slides / "qc") == 2  # OUT inside the input folder
    one_error(capsys, "lies inside the input folder", "choose an --out")
    assert sorted(tmp_path.rglob("*")) == before
    out = tmp_path / "qc"
    assert qc(slides, "--out", out) == 0
    # a partial copy of an output folder among the slides is not searched; a real image is
    partial = slides / "copied"
    partial.mkdir()
    for name in ("thumbnail.png", "overlay.png"):
        shutil.copy(out / "a" / name, partial / name)
    photos = slides / "photos"
    photos.mkdir()
    shutil.copy(out / "a" / "thumbnail.png", photos / "thumbnail.png")
    shutil.copy(source["b"], slides / "B.TIF")  # any case of a slide suffix
    assert find_slides([slides]) == [slides / "B.TIF", slides / "a.tif", photos / "thumbnail.png"]
    capsys.readouterr()
    # only slide suffixes are inputs, even when named explicitly
    (slides / "notes.txt").write_text("scanner 2")
    for path in (slides / "notes.txt", out / "a" / "blur.geojson", out / "a" / "summary.json"):
        assert qc(path, "--out", tmp_path / "other") == 2
        one_error(capsys, f"{path} is not a slide file", ".svs")
    assert not (tmp_path / "other").exists()
    shutil.rmtree(photos)
    assert qc(slides, "--out", out) == 0
    assert sorted(r["stem"] for r in table(out)) == ["B", "a"]


# -- 4. --slide-mpp is a fallback; --force-slide-mpp; --slide-mpp-csv ------------------------------


def test_slide_mpp_is_a_fallback_that_force_turns_into_an_override(tmp_path, source, capsys):
    slide, plain = copies(tmp_path / "in", source, "a", "plain")
    out = tmp_path / "qc"
    assert qc(slide, "--out", out, "--slide-mpp", "0.25") == 0  # the metadata says 0.5
    err = capsys.readouterr().err
    assert "a: a.tif states 0.5 um/px but --slide-mpp gives 0.25; using the metadata (pass " in err
    assert "--force-slide-mpp to use 0.25)" in err
    stored = summary(out, "a")
    assert (stored["slide_mpp"], stored["mpp_source"], stored["working_size"]) == (
        0.5,
        "metadata",
        [384, 256],
    )
    (warning,) = stored["warnings"]
    assert warning.startswith("a.tif states 0.5 um/px") and f"a: {warning}" in err

    assert qc(slide, "--out", out, "--slide-mpp", "0.25", "--force-slide-mpp") == 0
    err = capsys.readouterr().err
    assert "a: QC again: slide_mpp changed (0.5 -> 0.25)" in err
    assert "using 0.25 as --force-slide-mpp asks" in err
    stored = summary(out, "a")
    assert (stored["slide_mpp"], stored["mpp_source"], stored["working_size"]) == (
        0.25,
        "option",
        [192, 128],  # a "40x" slide judged at the model's 0.5 um/px: half as many pixels
    )
    # within 10 %: the metadata, and no warning; a slide without metadata takes the fallback
    assert qc(slide, plain, "--out", tmp_path / "qc2", "--slide-mpp", "0.52") == 0
    assert "states" not in capsys.readouterr().err
    assert summary(tmp_path / "qc2", "a")["mpp_source"] == "metadata"
    assert (
        summary(tmp_path / "qc2", "plain")["slide_mpp"],
        summary(tmp_path / "qc2", "plain")["mpp_source"],
    ) == (0.52, "option")
    assert qc(plain, "--out", tmp_path / "qc3") == 3  # no metadata, no fallback: an error row
    assert "--slide-mpp-csv" in table(tmp_path / "qc3")[0]["error"]


def test_slide_mpp_csv_gives_each_slide_of_a_mixed_cohort_its_resolution(tmp_path, source, capsys):
    folder = tmp_path / "in"
    (slide,) = copies(folder, source, "a")
    for name in ("n1", "n2", "n3"):
        shutil.copy(source["plain"], folder / f"{name}.png")
    (folder / "sub").mkdir()
    os.replace(folder / "n2.png", folder / "sub" / "n2.png")
    mpps = tmp_path / "mpp.csv"
    mpps.write_text(
        "slide,mpp,scanner\n"
        "n1.png,0.5,AT2\n"  # by file name
        "in/sub/n2.png,1.0,GT450\n"  # by path, from the CSV's folder
        "a.tif,0.25,AT2\n"  # disagrees with the metadata
        "missing.svs,0.5,\n"  # in no run
    )
    out = tmp_path / "qc"
    assert qc(folder, "--out", out, "--slide-mpp-csv", mpps, "--slide-mpp", "0.25") == 0
    err = capsys.readouterr().err
    assert f"1 slide(s) of {mpps} are not among the slides given: missing.svs" in err
    assert "a.tif states 0.5 um/px but --slide-mpp-csv gives 0.25; using the metadata" in err
    got = {
        stem: (summary(out, stem)["slide_mpp"], summary(out, stem)["mpp_source"])
        for stem in ("a", "n1", "n2", "n3")
    }
    assert got == {
        "a": (0.5, "metadata"),
        "n1": (0.5, "csv"),
        "n2": (1.0, "csv"),
        "n3": (0.25, "option"),  # not listed: the fallback
    }
    assert summary(out, "n2")["working_mpp"] == 1.0  # never finer than the slide
    assert {r["stem"]: r["mpp_source"] for r in table(out)}["n1"] == "csv"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "does not exist"),
        ("name,mpp\na.tif,0.5\n", "needs a header row with the columns slide and mpp"),
        ("slide,mpp\n", "lists no slides below its header"),
        ("slide,mpp\na.tif,abc\n", "line 2: mpp 'abc' of a.tif is not a number above 0.01"),
        ("slide,mpp\na.tif,0\n", "line 2: mpp '0'"),
        ("slide,mpp\na.tif,nan\n", "line 2: mpp 'nan'"),
        ("slide,mpp\na.tif,51\n", "at most 50 microns per pixel"),
        ("slide,mpp\n,0.5\n", "line 2 names no slide"),
        ("slide,mpp\na.tif,0.5\n\na.tif,0.25\n", "line 4 names a.tif again (first on line 2)"),
        (b"\xff\xfe\x00\x81", "cannot be read as CSV text (it is not UTF-8)"),
    ],
)
def test_a_bad_slide_mpp_csv_is_one_sentence(tmp_path, source, capsys, content, words):
    (slide,) = copies(tmp_path / "in", source, "a")
    mpps = tmp_path / "mpp.csv"
    if isinstance(content, bytes):
        mpps.write_bytes(content)
    elif content is not None:
        mpps.write_text(content)
    out = tmp_path / "qc"
    assert qc(slide, "--out", out, "--slide-mpp-csv", mpps) == 2
    one_error(capsys, f"--slide-mpp-csv {mpps}", words)
    assert not out.exists()


def test_force_slide_mpp_needs_a_value(tmp_path, source, capsys):
    (slide,) = copies(tmp_path / "in", source, "a")
    assert qc(slide, "--out", tmp_path / "qc", "--force-slide-mpp") == 2
    one_error(capsys, "--force-slide-mpp needs --slide-mpp or --slide-mpp-csv")
    assert not (tmp_path / "qc").exists()


# -- 5 and 6. statuses: no_tissue, flagged, ok, error; --flag-above; exit codes ------------------


def test_a_slide_without_tissue_is_no_tissue_and_shows_zeros(tmp_path, source, capsys):
    (glass,) = copies(tmp_path / "in", source, "glass")
    out = tmp_path / "qc"
    assert qc(glass, "--out", out) == 0  # a processed slide, not a failure
    assert "glass: no tissue found, nothing judged (no_tissue)" in capsys.readouterr().err
    (row,) = table(out)
    assert row["status"] == "no_tissue" and row["error"] == ""
    assert (row["tiles"], row["tissue_area_mm2"], row["blurred_fraction"]) == ("0", "0.0", "0.0")
    body = (out / "index.html").read_text().split("<tbody>")[1]
    assert "data-status='no_tissue'" in body and "<td data-value='no_tissue'>no tissue</td>" in body
    for value in ("0", "0.0"):  # zeros read as zeros, never as blank cells
        assert f"<td data-value='{value}'>{value}</td>" in body
    assert "<td data-value='0.0'>0.0%</td>" in body


def test_status_column_flag_above_and_exit_codes(tmp_path, source, capsys):
    slides = copies(tmp_path / "in", source, "a", "b", "glass")
    out = tmp_path / "qc"
    assert qc(*slides, "--out", out, "--flag-above", "0.99") == 0
    fraction = {r["stem"]: float(r["blurred_fraction"]) for r in table(out)}
    low, high = sorted([fraction["a"], fraction["b"]])
    assert 0 < low < high
    middle = (low + high) / 2
    written = {s: (out / s / "summary.json").stat().st_mtime_ns for s in ("a", "b", "glass")}
    capsys.readouterr()
    # a new --flag-above re-labels the slides without QC'ing them again; flagged is success
    assert qc(*slides, "--out", out, "--flag-above", str(middle)) == 0
    err = capsys.readouterr().err
    worse = "a" if fraction["a"] == high else "b"
    better = "b" if worse == "a" else "a"
    assert f"{worse}: {high:.1%} of" in err and "blurred (flagged) (already done)" in err
    assert "3 of 3 slide(s) done (1 flagged, 1 without tissue)" in err
    assert {s: (out / s / "summary.json").stat().st_mtime_ns for s in written} == written
    assert {r["stem"]: r["status"] for r in table(out)} == {
        worse: "flagged",
        better: "ok",
        "glass": "no_tissue",
    }
    assert index_rows(out) == {worse: "flagged", better: "ok", "glass": "no_tissue"}
    page = (out / "index.html").read_text()
    assert f"1 flagged (more than {middle:.1%} of the tissue blurred)" in page
    assert "<select id='status'>" in page and "<option value='flagged'>flagged (1)</option>" in page
    # a failed slide: exit 3, an error status, the others kept
    broken = tmp_path / "in" / "broken.svs"
    broken.write_text("not a slide")
    assert qc(*slides, broken, "--out", out, "--flag-above", str(middle)) == 3
    assert {r["stem"]: r["status"] for r in table(out)} == {
        worse: "flagged",
        better: "ok",
        "glass": "no_tissue",
        "broken": "error",
    }
    assert list(index_rows(out).values())[:2] == ["error", "flagged"]  # what to act on first
    with pytest.raises(SystemExit):
        qc(*slides, "--out", out, "--flag-above")
    capsys.readouterr()
    assert qc(*slides, "--out", out, "--flag-above", "1") == 2
    one_error(capsys, "--flag-above")


# -- a killed cohort -----------------------------------------------------------------------------


def dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_a_killed_cohort_resumes_with_nothing_lost_doubled_or_half_written(
    tmp_path, source, monkeypatch
):
    slides = copies(tmp_path / "in", source, "a", "b", "glass")
    out = tmp_path / "qc"
    real = cohort.qc_slide

    def killed_at_b(slide, *args, **kwargs):
        if slide.stem == "b":
            raise KeyboardInterrupt  # the run is stopped while QC'ing b
        return real(slide, *args, **kwargs)

    monkeypatch.setattr(cohort, "qc_slide", killed_at_b)
    with pytest.raises(KeyboardInterrupt):
        run_cohort(slides, out, QCConfig())
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["a"]  # no table yet, no half of b
    # what a SIGKILL leaves: a temporary folder of b, and damaged folders of a and glass
    host = owner_tag().split("@", 1)[1]
    stale = out / f".b.tmp-{dead_pid()}@{host}-x1y2"
    stale.mkdir()
    (stale / "blur_mask.png").write_bytes(b"\x89PNG half")
    run_cohort([slides[2]], out, QCConfig())
    text = (out / "a" / "summary.json").read_text()
    (out / "a" / "summary.json").write_text(text[: len(text) // 2])  # half-written
    (out / "glass" / "summary.json").unlink()  # missing

    seen = []
    rows = run_cohort(slides, out, QCConfig(), progress=seen.append)
    assert [(r["stem"], bool(r.get("skipped"))) for r in seen] == [
        ("a", False),
        ("b", False),
        ("glass", False),
    ]
    assert all(not r["error"] for r in rows)
    assert [r["stem"] for r in table(out)] == ["a", "b", "glass"]  # one row per slide
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporaries
    for stem in ("a", "b", "glass"):
        assert sorted(p.name for p in (out / stem).iterdir()) == sorted(OUTPUT_FILES)
        assert summary(out, stem)["stem"] == stem  # whole JSON
    seen.clear()
    run_cohort(slides, out, QCConfig(), progress=seen.append)
    assert all(r.get("skipped") for r in seen) and len(table(out)) == 3
