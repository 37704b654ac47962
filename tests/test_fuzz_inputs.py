"""Fuzzing the image readers and ``histoblur segment`` with damaged and random files.

Every bad input must end in one sentence: ``read_image`` returns a conforming array or raises
:class:`InputError`; the CLI returns 0 or 1 and, on 1, prints a single ``histoblur: error:``
line, leaves no half-written file, and never shows a traceback. Seeds are small valid PNG,
JPEG and TIFF files made from a fixed texture; hypothesis runs derandomized, so every run
tries the same examples.
"""

from __future__ import annotations

import contextlib
import io
import logging
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from histoblur.cli.main import main
from histoblur.errors import HistoblurError, InputError
from histoblur.io.checkpoints import save_checkpoint
from histoblur.io.images import DEFAULT_MAX_PIXELS, check_image, read_image
from histoblur.models.registry import build_model
from histoblur.models.unet import UNetConfig

# PIL warns about every damaged TIFF it parses; the CLI tests below look at those on purpose
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")

H, W = 48, 64
READ_EXAMPLES = 150
CLI_EXAMPLES = 30
FORMATS = ("png", "jpg", "tif", "tif-zlib")
SUFFIX = {"png": ".png", "jpg": ".jpg", "tif": ".tif", "tif-zlib": ".tif"}
# seconds within which a header declaring too many pixels must be refused (nothing decoded)
QUICK_S = 2.0

READ_SETTINGS = settings(
    max_examples=READ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLI_SETTINGS = settings(READ_SETTINGS, max_examples=CLI_EXAMPLES)


def texture(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Blocky random RGB texture (compresses a little, decodes the same everywhere)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 220, (-(-h // 4), -(-w // 4), 3), dtype=np.uint8)
    noise = rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
    return np.kron(base, np.ones((4, 4, 1), np.uint8))[:h, :w] + noise


def encode(fmt: str, image: np.ndarray) -> bytes:
    """The bytes of ``image`` (RGB) as a valid file of format ``fmt``."""
    if fmt in ("png", "jpg"):
        ok, buf = cv2.imencode("." + fmt, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        assert ok
        return buf.tobytes()
    out = io.BytesIO()
    if fmt == "tif":
        tifffile.imwrite(out, image, photometric="rgb")
    else:
        tifffile.imwrite(out, image, photometric="rgb", tile=(16, 16), compression="zlib")
    return out.getvalue()


SEEDS = {fmt: encode(fmt, texture()) for fmt in FORMATS}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def model(work: Path) -> Path:
    """A tiny untrained segmentation checkpoint: each CLI example takes milliseconds."""
    arch = UNetConfig(width=4, depth=2)
    net = build_model(arch)
    config = {
        "task": "blur-segmentation",
        "model": arch.model_dump(mode="json"),
        "inference": {"tile": 64, "threshold": 0.5},
    }
    return save_checkpoint(work / "model", net.state_dict(), config)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = Path(tempfile.mkdtemp(dir=folder, prefix="in-")) / name
    path.write_bytes(data)
    return path


def check_read(path: Path) -> np.ndarray | None:
    """``read_image`` gives a conforming array or an InputError; anything else fails."""
    try:
        image = read_image(path)
    except InputError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message, repr(message)
        return None
    check_image(image)
    assert image.dtype in (np.uint8, np.uint16)
    assert image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)), image.shape
    return image


@contextlib.contextmanager
def plain_process_noise() -> Iterator[list[str]]:
    """Collect what a plain ``histoblur`` process would also print on stderr.

    Under pytest, Python warnings are recorded and log records go to pytest's handlers, so
    neither reaches ``capsys``; in a real run, warnings are printed and records of WARNING and
    above reach stderr through logging's last-resort handler (histoblur configures no logging).
    """
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # each CLI run is a fresh process
            yield lines
    finally:
        root.removeHandler(handler)
    for w in caught:
        shown = warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
        lines.extend(shown.splitlines())


def run_segment(model: Path, work: Path, path: Path, capsys, *extra: str) -> tuple[int, str]:
    """``histoblur segment`` on one file into a fresh folder; checks the error contract.

    On error, no library warning or log line may reach stderr either.
    """
    capsys.readouterr()  # drop what earlier examples printed
    out = Path(tempfile.mkdtemp(dir=work, prefix="out-")) / "out"
    with plain_process_noise() as noise:
        code = main(["segment", "--model", str(model), "--out", str(out), *extra, str(path)])
    err = capsys.readouterr().err
    assert code in (0, 1), (code, err)
    assert "Traceback" not in err, err
    stem = path.stem
    finals = {f"{stem}_mask.png", f"{stem}_prob.png", f"{stem}_overlay.png", "segment.json"}
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if code == 1:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("histoblur: error:"), err
        assert not noise, [*noise, *lines]
        # no half-written output: nothing hidden or temporary is left behind
        assert all(name in finals for name in present), present
    else:
        assert set(present) == finals, present
    return code, err


# --- strategies -------------------------------------------------------------------------------


def truncated(fmt: str) -> st.SearchStrategy[bytes]:
    seed = SEEDS[fmt]
    return st.integers(0, len(seed) - 1).map(lambda n: seed[:n])


def flipped(fmt: str) -> st.SearchStrategy[bytes]:
    """The seed with 1-8 bytes XOR-ed with a random non-zero mask, often inside the header."""
    seed = SEEDS[fmt]
    offset = st.one_of(st.integers(0, min(64, len(seed) - 1)), st.integers(0, len(seed) - 1))
    flips = st.lists(st.tuples(offset, st.integers(1, 255)), min_size=1, max_size=8)

    def apply(changes: list[tuple[int, int]]) -> bytes:
        data = bytearray(seed)
        for at, mask in changes:
            data[at] ^= mask
        return bytes(data)

    return flips.map(apply)


def damaged(fmt: str) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(min_size=0, max_size=2000), truncated(fmt), flipped(fmt))


def png_with_size(width: int, height: int) -> bytes:
    """The PNG seed with its IHDR width and height replaced (CRC recomputed: a 'valid' header)."""
    data = bytearray(SEEDS["png"])
    assert data[12:16] == b"IHDR"
    body = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = body
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return bytes(data)


def png_with_idat_length(length: int) -> bytes:
    """The PNG seed with the length field of its first IDAT chunk replaced."""
    data = bytearray(SEEDS["png"])
    assert data[37:41] == b"IDAT"
    data[33:37] = struct.pack(">I", length)
    return bytes(data)


def jpeg_with_size(width: int, height: int) -> bytes:
    """The JPEG seed with its SOF frame height and width replaced."""
    data = bytearray(SEEDS["jpg"])
    at = 2
    while True:
        assert data[at] == 0xFF
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        at += 2 + length


def tiff_with_size(width: int, height: int) -> bytes:
    """The uncompressed TIFF seed with its ImageWidth and ImageLength tags replaced."""
    data = bytearray(SEEDS["tif"])
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tags = tif.pages.first.tags
        places = {
            name: (tags[name].valueoffset, tags[name].dtype)
            for name in ("ImageWidth", "ImageLength")
        }
    order = "<" if data[:2] == b"II" else ">"
    for name, value in (("ImageWidth", width), ("ImageLength", height)):
        offset, dtype = places[name]
        fmt = order + ("H" if int(dtype) == 3 else "I")
        data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(data)


HUGE = {"png": png_with_size, "jpg": jpeg_with_size, "tif": tiff_with_size}
# sides allowed by each format, and always above the default limit together
SIDE = {"png": 2**31 - 1, "jpg": 65535, "tif": 65535}


def huge_sizes(fmt: str) -> st.SearchStrategy[tuple[int, int]]:
    side = st.integers(10_001, SIDE[fmt])
    return st.tuples(side, side)


# --- the seeds are valid ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_seed_files_read_back(work, fmt):
    path = write(work, "seed" + SUFFIX[fmt], SEEDS[fmt])
    image = read_image(path)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    if fmt != "jpg":
        np.testing.assert_array_equal(image, texture())


@pytest.mark.parametrize("fmt", ["png", "jpg", "tif"])
def test_size_editors_keep_the_file_valid(work, fmt):
    """The header editors used below produce files that still read (at a readable size)."""
    edited = HUGE[fmt](W, H)
    assert read_image(write(work, "same" + SUFFIX[fmt], edited)).shape == (H, W, 3)


# --- read_image -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_image_random_bytes(work, fmt):
    folder = Path(tempfile.mkdtemp(dir=work))

    @READ_SETTINGS
    @given(data=st.binary(min_size=0, max_size=2000))
    def check(data):
        path = folder / ("random" + SUFFIX[fmt])
        path.write_bytes(data)
        check_read(path)

    check()


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_image_truncated(work, fmt):
    folder = Path(tempfile.mkdtemp(dir=work))

    @READ_SETTINGS
    @given(data=truncated(fmt))
    def check(data):
        path = folder / ("cut" + SUFFIX[fmt])
        path.write_bytes(data)
        image = check_read(path)
        if fmt != "jpg" and image is not None:
            # a lossless file read despite the cut lost only trailing bytes, not pixels
            np.testing.assert_array_equal(image, texture())

    check()


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_image_bit_flips(work, fmt):
    folder = Path(tempfile.mkdtemp(dir=work))

    @READ_SETTINGS
    @given(data=flipped(fmt))
    def check(data):
        path = folder / ("flip" + SUFFIX[fmt])
        path.write_bytes(data)
        check_read(path)

    check()


@pytest.mark.parametrize("fmt", ["png", "jpg", "tif"])
def test_read_image_refuses_huge_declared_size_quickly(work, fmt):
    folder = Path(tempfile.mkdtemp(dir=work))

    @settings(READ_SETTINGS, max_examples=25)
    @given(size=huge_sizes(fmt))
    def check(size):
        path = folder / ("huge" + SUFFIX[fmt])
        path.write_bytes(HUGE[fmt](*size))
        start = time.perf_counter()
        with pytest.raises(InputError, match="--max-pixels"):
            read_image(path)
        assert time.perf_counter() - start < QUICK_S

    check()


def test_read_image_refuses_100k_png_without_decoding(work):
    path = write(work, "huge.png", png_with_size(100_000, 100_000))
    start = time.perf_counter()
    with pytest.raises(InputError, match="--max-pixels") as info:
        read_image(path)
    assert time.perf_counter() - start < QUICK_S
    assert "100,000 x 100,000" in str(info.value)
    # the limit is the caller's to raise: under a smaller one the valid seed is refused too
    with pytest.raises(InputError, match="--max-pixels"):
        read_image(write(work, "seed.png", SEEDS["png"]), max_pixels=H * W - 1)
    assert read_image(write(work, "seed.png", SEEDS["png"]), max_pixels=H * W).shape[:2] == (H, W)
    assert DEFAULT_MAX_PIXELS < 100_000**2


CHILD = """
import re, sys
from pathlib import Path
from histoblur.errors import InputError
from histoblur.io.images import read_image

def peak():  # high-water RSS of this process (its own, unlike ru_maxrss after fork + exec)
    return int(re.search(r"VmHWM:\\s*(\\d+) kB", Path("/proc/self/status").read_text())[1])

read_image(sys.argv[1])
before = peak()
try:
    read_image(sys.argv[2])
except InputError:
    pass
print(before, peak())
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_read_image_png_chunk_length_is_not_allocated(work):
    """A chunk declaring 256 MB in a 7 KB file is refused without allocating 256 MB.

    Measured in a child process (its peak RSS before and after), as OpenCV's allocations
    are invisible to tracemalloc.
    """
    seed = write(work, "seed.png", SEEDS["png"])
    bad = write(work, "biglen.png", png_with_idat_length(256 << 20))
    with pytest.raises(InputError):
        read_image(bad)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(seed), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, after = (int(v) for v in out.stdout.split())
    assert after - before < 64 << 10, f"peak RSS grew by {(after - before) >> 10} MiB"


def test_read_image_errors_are_ours(work):
    """Missing file, folder and empty file: InputError, a HistoblurError."""
    for path in (work / "missing.png", work, write(work, "empty.png", b"")):
        with pytest.raises(HistoblurError):
            read_image(path)


# --- histoblur segment ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_segment_valid_seed(model, work, capsys, fmt):
    code, err = run_segment(model, work, write(work, "seed" + SUFFIX[fmt], SEEDS[fmt]), capsys)
    assert code == 0, err


@pytest.mark.parametrize("fmt", FORMATS)
def test_segment_damaged_files(model, work, capsys, fmt):
    @CLI_SETTINGS
    @given(data=damaged(fmt))
    def check(data):
        path = write(work, "fuzz" + SUFFIX[fmt], data)
        run_segment(model, work, path, capsys)

    check()


@pytest.mark.parametrize("fmt", ["png", "jpg", "tif"])
def test_segment_refuses_huge_declared_size(model, work, capsys, fmt):
    @settings(CLI_SETTINGS, max_examples=10)
    @given(size=huge_sizes(fmt))
    def check(size):
        path = write(work, "huge" + SUFFIX[fmt], HUGE[fmt](*size))
        start = time.perf_counter()
        code, err = run_segment(model, work, path, capsys)
        assert time.perf_counter() - start < QUICK_S + 3
        assert code == 1 and "--max-pixels" in err, err

    check()


def test_segment_max_pixels_option(model, work, capsys):
    path = write(work, "seed.png", SEEDS["png"])
    code, err = run_segment(model, work, path, capsys, "--max-pixels", str(H * W - 1))
    assert code == 1 and "--max-pixels" in err, err
    code, err = run_segment(model, work, path, capsys, "--max-pixels", str(H * W))
    assert code == 0, err


def test_segment_corrupt_tiff_prints_only_the_error(model, work):
    """The real command, in its own process: stderr is exactly the one error line."""
    data = bytearray(SEEDS["tif"])
    data[16] ^= 0x01  # the value count of the first IFD entry (ImageWidth): 1 -> 0x0101
    path = write(work, "corrupt.tif", bytes(data))
    out = Path(tempfile.mkdtemp(dir=work, prefix="out-")) / "out"
    cmd = [sys.executable, "-m", "histoblur.cli.main", "segment", "--model", str(model)]
    result = subprocess.run(
        [*cmd, "--out", str(out), str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("histoblur: error: Cannot read image"), result.stderr
    assert len(lines) == 1, result.stderr
