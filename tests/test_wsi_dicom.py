"""DICOM whole-slide images: a .dcm file or a folder of one slide's instances, read through
wsidicom (or frame by frame where wsidicom refuses an instance), QC'd like any other slide."""

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
import skimage.data
import wsidicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from histoblur.cli.main import main
from histoblur.errors import InputError
from histoblur.inference.cohort import find_slides
from histoblur.inference.qc import OUTPUT_FILES
from histoblur.wsi.dicom import (
    WSI_SOP_CLASS,
    DicomFramesReader,
    DicomReader,
    is_dicom_slide_folder,
)
from histoblur.wsi.pyramid import write_pyramidal_tiff
from histoblur.wsi.readers import open_slide

MPP = 0.5
# the real file's over-long values and its JFIF frames labelled RGB: pydicom warns, rightly
pytestmark = pytest.mark.filterwarnings(r"ignore::UserWarning:pydicom\..*")


def new_dataset(sop_class: str) -> Dataset:
    """An empty DICOM dataset of ``sop_class`` with its file meta (explicit VR little endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    return ds


def write_wsi_dicom(
    path: Path,
    image: np.ndarray,
    tile: int = 64,
    mpp: float = MPP,
    legacy: bool = False,
    uids: dict[str, str] | None = None,
) -> Path:
    """A single-level, tiled-full, uncompressed RGB whole-slide instance.

    ``legacy`` leaves out what some writers do (Image Type, Dimension Organization Type, Pixel
    Spacing), so that wsidicom refuses the file; the Imaged Volume still gives ``mpp``.
    ``uids`` (from :func:`slide_uids`) makes instances of one slide: the levels of a series.
    """
    h, w = image.shape[:2]
    across, down = -(-w // tile), -(-h // tile)
    padded = np.full((down * tile, across * tile, 3), 255, np.uint8)
    padded[:h, :w] = image
    frames = padded.reshape(down, tile, across, tile, 3).swapaxes(1, 2).reshape(-1, tile, tile, 3)
    ds = new_dataset(WSI_SOP_CLASS)
    ds.Modality = "SM"
    for keyword, value in (uids or slide_uids()).items():
        setattr(ds, keyword, value)
    ds.Rows = ds.Columns = tile
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows, ds.NumberOfFrames = w, h, len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.ImagedVolumeWidth, ds.ImagedVolumeHeight = w * mpp / 1000, h * mpp / 1000
    if not legacy:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        ds.DimensionOrganizationType = "TILED_FULL"
        ds.SharedFunctionalGroupsSequence = Sequence([pixel_measures(mpp)])
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def slide_uids() -> dict[str, str]:
    """New study, series and frame-of-reference UIDs: one slide."""
    keywords = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
    return {keyword: generate_uid() for keyword in keywords}


def pixel_measures(mpp: float) -> Dataset:
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [mpp / 1000, mpp / 1000], 0.001
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    return shared


def save_series(instance: Path, folder: Path) -> Path:
    """The pyramid wsidicom writes from one instance: a folder of one .dcm per level."""
    with wsidicom.WsiDicom.open(instance) as slide:
        slide.save(folder, add_missing_levels=True, workers=1)
    return folder


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    return skimage.data.immunohistochemistry()[:300, :400].copy()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, tissue):
    """A conformant instance, the same without the attributes wsidicom needs, and the series
    wsidicom writes from the first (4 levels, one instance each)."""
    root = tmp_path_factory.mktemp("dicom_synthetic")
    full = write_wsi_dicom(root / "full.dcm", tissue)
    legacy = write_wsi_dicom(root / "legacy.dcm", tissue, legacy=True)
    return {"full": full, "legacy": legacy, "series": save_series(full, root / "series")}


@pytest.fixture(scope="module")
def real(data_dir, tmp_path_factory):
    """The real DICOM slide, a copy wsidicom reads (the attributes it lacks added, and the
    colour space its JPEG frames hold), and the series wsidicom writes from that copy."""
    path = data_dir / "wsi" / "small_dicom.dcm"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    root = tmp_path_factory.mktemp("dicom_real")
    ds = pydicom.dcmread(path)
    ds.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.PhotometricInterpretation = "YBR_FULL_422"  # JFIF frames, though the file states RGB
    ds.SharedFunctionalGroupsSequence = Sequence([pixel_measures(MPP)])
    ds.save_as(root / "repaired.dcm")
    series = save_series(root / "repaired.dcm", root / "small_series")
    return {"file": path, "repaired": root / "repaired.dcm", "series": series}


def wsidicom_region(path: Path, level: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """``box=(x, y, w, h)`` in level pixels, as wsidicom reads it."""
    with wsidicom.WsiDicom.open(path) as slide:
        number = slide.levels.levels[level].level
        return slide.read_region(box[:2], number, box[2:], as_array=True)


# -- pixels, levels, resolution ----------------------------------------------------------------


def test_real_file_reads_frame_by_frame_with_wsidicom_pixels(real):
    reader = open_slide(real["file"])  # wsidicom finds no level in it: no Image Type
    try:
        assert isinstance(reader, DicomFramesReader) and reader.kind == "dicom-frames"
        assert reader.level_dimensions == ((3236, 2638),) and reader.level_downsamples == (1.0,)
        assert reader.mpp is None  # no Pixel Spacing; Imaged Volume 15 x 15 mm is not square
        level0 = reader.read_region(0, 0, 0, (3236, 2638))
        np.testing.assert_array_equal(
            level0, wsidicom_region(real["repaired"], 0, (0, 0, 3236, 2638))
        )
        np.testing.assert_array_equal(  # a box across frame borders, partly outside
            reader.read_region(3000, 480, 0, (400, 60))[:, :236], level0[480:540, 3000:]
        )
        assert (reader.read_region(3000, 480, 0, (400, 60))[:, 236:] == 255).all()
        frames = pydicom.dcmread(real["file"]).pixel_array  # pydicom's decoder: within 1
        assert np.abs(level0[500:1000, 500:1000].astype(int) - frames[8]).max() <= 1
    finally:
        reader.close()


def test_real_series_folder_reads_as_wsidicom_does(real):
    reader = open_slide(real["series"])
    try:
        assert isinstance(reader, DicomReader) and reader.kind == "wsidicom"
        dims = reader.level_dimensions
        assert dims == ((3236, 2638), (1618, 1319), (809, 660), (405, 330))
        assert reader.level_downsamples == pytest.approx((1, 2, 4, 8), rel=0.01)
        assert reader.mpp == pytest.approx(MPP)  # Pixel Spacing 0.0005 mm
        for level, d in enumerate(reader.level_downsamples):
            box = (37, 21, 300, 200)
            region = reader.read_region(round(box[0] * d), round(box[1] * d), level, box[2:])
            np.testing.assert_array_equal(region, wsidicom_region(real["series"], level, box))
        np.testing.assert_array_equal(  # level 0 as written by wsidicom: the file's pixels
            reader.read_region(0, 0, 0, (3236, 2638)),
            wsidicom_region(real["repaired"], 0, (0, 0, 3236, 2638)),
        )
    finally:
        reader.close()


def test_synthetic_instances_read_exactly(synthetic, tissue):
    for name, kind, mpp in (("full", "wsidicom", MPP), ("legacy", "dicom-frames", MPP)):
        reader = open_slide(synthetic[name])
        assert reader.kind == kind and reader.level_dimensions == ((400, 300),)
        assert reader.mpp == pytest.approx(mpp)  # legacy: from the Imaged Volume
        np.testing.assert_array_equal(reader.read_region(0, 0, 0, (400, 300)), tissue)
        box = reader.read_region(-10, 290, 0, (30, 20))  # outside the image is white glass
        assert (box[10:] == 255).all() and (box[:, :10] == 255).all()
        np.testing.assert_array_equal(box[:10, 10:], tissue[290:, :20])
        reader.close()
    series = open_slide(synthetic["series"])
    assert series.kind == "wsidicom" and len(series.level_dimensions) == 4
    assert series.level_dimensions[:3] == ((400, 300), (200, 150), (100, 75))
    series.close()


@pytest.mark.parametrize("name", ["series", "legacy"])
def test_threads_read_what_one_thread_reads(synthetic, name):
    reader = open_slide(synthetic[name])
    rng = np.random.default_rng(0)
    levels = len(reader.level_dimensions)
    boxes = [(*rng.integers(-50, 350, 2).tolist(), int(rng.integers(levels))) for _ in range(80)]
    serial = [reader.read_region(x, y, lv, (96, 80)) for x, y, lv in boxes]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda b: reader.read_region(b[0], b[1], b[2], (96, 80)), boxes))
    reader.close()
    assert all(np.array_equal(a, b) for a, b in zip(serial, threaded, strict=True))


# -- slides found in folders -------------------------------------------------------------------


def test_a_series_folder_is_one_slide(synthetic, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(synthetic["series"], cohort / "case1")
    shutil.copy(synthetic["full"], cohort / "single.dcm")
    write_pyramidal_tiff(cohort / "deep" / "b.tif", np.zeros((64, 64, 3), np.uint8), mpp=MPP)
    assert is_dicom_slide_folder(cohort / "case1") and not is_dicom_slide_folder(cohort)
    assert find_slides([cohort]) == [
        cohort / "case1",
        cohort / "deep" / "b.tif",
        cohort / "single.dcm",
    ]
    assert find_slides([cohort / "case1"]) == [cohort / "case1"]
    # single-file slides of their own series side by side: each file is a slide
    singles = tmp_path / "singles"
    singles.mkdir()
    for stem in ("x", "y"):
        shutil.copy(synthetic["full" if stem == "x" else "legacy"], singles / f"{stem}.dcm")
    assert find_slides([singles]) == [singles / "x.dcm", singles / "y.dcm"]
    # a multi-file series beside another slide's instance is ambiguous
    shutil.copy(synthetic["legacy"], cohort / "case1" / "stray.dcm")
    with pytest.raises(InputError, match="2 whole-slide series; give each slide's instances"):
        find_slides([cohort])
    with pytest.raises(InputError, match="2 whole-slide series"):
        open_slide(cohort / "case1")


# -- bad input ---------------------------------------------------------------------------------


def write_secondary_capture(path: Path) -> Path:
    """A tiny DICOM image that is not a whole-slide image."""
    ds = new_dataset(SecondaryCaptureImageStorage)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "OT"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = bytes(64)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture()
def bad(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 400)
    write_secondary_capture(tmp_path / "capture.dcm")
    sparse = write_wsi_dicom(tmp_path / "sparse.dcm", np.zeros((64, 64, 3), np.uint8), legacy=True)
    ds = pydicom.dcmread(sparse)
    ds.DimensionOrganizationType = "TILED_SPARSE"  # and no frame positions: nobody reads it
    ds.save_as(sparse)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no slide here")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("junk.dcm", "is named .dcm but is not a DICOM file (no DICM marker)"),
        ("capture.dcm", "is DICOM but not a whole-slide image (Secondary Capture Image Storage)"),
        ("empty", "is a folder without .dcm files"),
        ("sparse.dcm", "read frame by frame (sparse.dcm: its frames are placed one by one"),
    ],
)
def test_bad_dicom_input_is_one_sentence(bad, name, words):
    with pytest.raises(InputError, match=r"^[^\n]*$") as error:
        open_slide(bad / name)
    assert words in str(error.value) and str(error.value).endswith(".")


@pytest.mark.parametrize(
    ("name", "code", "words"),
    [
        ("junk.dcm", 3, "is named .dcm but is not a DICOM file"),
        ("capture.dcm", 3, "is DICOM but not a whole-slide image"),
        ("empty", 2, "holds no slide files"),
    ],
)
def test_qc_refuses_bad_dicom_input_without_traceback(bad, capsys, name, code, words):
    assert main(["qc", str(bad / name), "--out", str(bad / "qc"), "--device", "cpu"]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and words in err, err


def test_a_truncated_real_file_is_one_sentence(real, tmp_path):
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(real["file"].read_bytes()[:800_000])
    with pytest.raises(InputError, match="its pixel data ends before its last frame"):
        open_slide(cut)


# -- QC end to end -----------------------------------------------------------------------------


def outputs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_qc_of_a_series_folder_writes_what_a_tiff_gets(synthetic, tissue, tmp_path):
    tiff = write_pyramidal_tiff(tmp_path / "in" / "tiff_slide.tif", tissue, mpp=MPP)
    series = shutil.copytree(synthetic["series"], tmp_path / "in" / "dicom_slide")
    out = tmp_path / "qc"
    assert main(["qc", str(series), str(tiff), "--out", str(out), "--device", "cpu"]) == 0
    assert outputs(out / "dicom_slide") == outputs(out / "tiff_slide") == set(OUTPUT_FILES)
    dicom, plain = (
        json.loads((out / s / "summary.json").read_text()) for s in ("dicom_slide", "tiff_slide")
    )
    assert dicom.keys() == plain.keys() and dicom["reader"] == "wsidicom"
    assert dicom["slide_mpp"] == pytest.approx(MPP) and dicom["mpp_source"] == "metadata"
    assert dicom["working_size"] == plain["working_size"]


def test_qc_of_the_real_dicom_file(real, tmp_path):
    out = tmp_path / "qc"
    args = ["--out", out, "--slide-mpp", MPP, "--mpp", 2.0, "--device", "cpu"]
    assert main(["qc", str(real["file"]), *map(str, args)]) == 0
    assert outputs(out / "small_dicom") == set(OUTPUT_FILES)
    summary = json.loads((out / "small_dicom" / "summary.json").read_text())
    assert summary["reader"] == "dicom-frames" and summary["mpp_source"] == "option"
    assert summary["level0_size"] == [3236, 2638] and summary["tissue_area_mm2"] > 0.1


def test_help_does_not_import_wsidicom():
    code = (
        "import sys; from histoblur.cli.main import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "assert 'wsidicom' not in sys.modules and 'pydicom' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
