"""Image files and the array conventions every histoblur function shares.

Arrays are ``(H, W)`` greyscale or ``(H, W, C)`` with C = 3 (RGB) or 4 (RGBA), dtype uint8 or
uint16, channels in RGB order. Files are read with OpenCV (PNG, JPEG, TIFF, BMP), turned upright
by their EXIF orientation as image viewers do, and written as PNG atomically. A file's declared
size is checked before its pixels are decoded: images above :data:`DEFAULT_MAX_PIXELS` are
refused unless the caller raises the limit (:func:`pixel_limit`, ``--max-pixels``).

Examples:
    >>> import tempfile
    >>> image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_image(Path(tmp) / "tile.png", image)
    ...     back = read_image(path)
    >>> back.shape, back.dtype, bool((back == image).all())  # PNG is lossless, RGB order kept
    ((16, 24, 3), dtype('uint8'), True)
"""

from __future__ import annotations

import contextlib
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from histoblur.errors import InputError, ParameterError
from histoblur.io.atomic import atomic_path
from histoblur.io.paths import existing_file

SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# images read whole: 100 MP (10,000 x 10,000 px) is ~0.3 GB as uint8 RGB and a few GB of work
DEFAULT_MAX_PIXELS = 100_000_000
_MAX_PIXELS: ContextVar[int] = ContextVar("histoblur_max_pixels", default=DEFAULT_MAX_PIXELS)
_PIL_LOCK = threading.Lock()
EXIF_ORIENTATION = 0x0112


@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Set the largest image (in pixels) :func:`read_image` decodes inside the block.

    >>> with pixel_limit(400_000_000):
    ...     pass  # read_image now accepts up to 20,000 x 20,000 px

    Raises:
        ParameterError: a limit below 1.
    """
    if max_pixels < 1:
        raise ParameterError(f"--max-pixels must be at least 1, got {max_pixels}.")
    token = _MAX_PIXELS.set(int(max_pixels))
    try:
        yield
    finally:
        _MAX_PIXELS.reset(token)


@contextlib.contextmanager
def pil_unlimited() -> Iterator[Any]:
    """PIL's ``Image`` module with its decompression-bomb guard lifted inside the block only.

    histoblur checks declared sizes itself (:func:`read_header`) and slide readers open files
    far above PIL's limit; the guard is restored for the rest of the process on exit.
    """
    from PIL import Image

    with _PIL_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield Image
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@dataclass(frozen=True)
class ImageHeader:
    """What a file declares before any pixel is decoded.

    >>> ImageHeader(width=40_000, height=30_000).pixels
    1200000000
    """

    width: int
    height: int
    orientation: int = 1  # EXIF orientation, 1 (upright) to 8

    @property
    def pixels(self) -> int:
        """Declared width x height."""
        return self.width * self.height


def read_header(path: str | Path) -> ImageHeader | None:
    """Declared size and EXIF orientation of an image file; None when the header is unreadable.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_image(Path(tmp) / "a.png", np.zeros((16, 24), np.uint8))
        ...     read_header(path)
        ImageHeader(width=24, height=16, orientation=1)
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged header: the decoder names the problem
            with pil_unlimited() as Image, Image.open(path) as im:
                width, height = im.size
                orientation = _orientation(Image, im)
    except Exception:  # noqa: BLE001 - any parse failure: the decoder gives the precise error
        return None
    return ImageHeader(int(width), int(height), orientation if 1 <= orientation <= 8 else 1)


def _orientation(module: Any, im: Any) -> int:
    """EXIF orientation from the header only (``getexif`` would decode a whole PNG)."""
    raw = im.info.get("exif")
    if raw:
        exif = module.Exif()
        exif.load(raw)
        return int(exif.get(EXIF_ORIENTATION, 1) or 1)
    tags = getattr(im, "tag_v2", None)  # TIFF: the tag is in the first directory
    return int(tags.get(EXIF_ORIENTATION, 1) or 1) if tags is not None else 1


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) so the array looks as a viewer shows the file.

    >>> upright(np.arange(6, dtype=np.uint8).reshape(2, 3), 6).shape  # rotated 90 degrees
    (3, 2)
    """
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transpose, then flip as for the rotated cases
    flips = {2: (1,), 3: (0, 1), 4: (0,), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation, ())
    for axis in flips:
        image = np.flip(image, axis)
    return np.ascontiguousarray(image)


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate the array conventions and return the image unchanged.

    Raises:
        InputError: for an unsupported dtype, channel count or an empty image.

    Examples:
        >>> check_image(np.zeros((4, 4, 3), np.uint8)).shape
        (4, 4, 3)
        >>> check_image(np.zeros((4, 4), np.float32))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        histoblur.errors.InputError: The image has dtype float32; histoblur supports uint8 and ...
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"The {name} must be a numpy array, got {type(image).__name__}.")
    if image.dtype not in SUPPORTED_DTYPES:
        raise InputError(
            f"The {name} has dtype {image.dtype}; histoblur supports uint8 and uint16."
        )
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InputError(
            f"The {name} has shape {image.shape}; expected (H, W) or (H, W, C) with C in 1, 3, 4."
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"The {name} is empty (shape {image.shape}).")
    return image


def dtype_max(dtype: np.dtype) -> float:
    """Largest value of an integer image dtype (255 or 65535).

    >>> dtype_max(np.dtype(np.uint8)), dtype_max(np.dtype(np.uint16))
    (255.0, 65535.0)
    """
    return float(np.iinfo(dtype).max)


def to_float(image: np.ndarray) -> np.ndarray:
    """Scale an integer image to float32 in [0, 1].

    >>> to_float(np.array([[0, 51, 255]], np.uint8))
    array([[0. , 0.2, 1. ]], dtype=float32)
    """
    return image.astype(np.float32) / dtype_max(image.dtype)


def from_float(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round a [0, 1] float image back to an integer dtype, clipping out-of-range values.

    >>> from_float(np.array([[-0.5, 0.2, 1.5]], np.float32), np.uint8)
    array([[  0,  51, 255]], dtype=uint8)
    """
    peak = dtype_max(np.dtype(dtype))
    return np.clip(np.rint(image * peak), 0, peak).astype(dtype)


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split an RGBA image into colour and alpha; other images return ``(image, None)``.

    >>> colour, alpha = split_alpha(np.zeros((4, 4, 4), np.uint8))
    >>> colour.shape, alpha.shape
    ((4, 4, 3), (4, 4))
    >>> split_alpha(np.zeros((4, 4), np.uint8))[1] is None
    True
    """
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., :3], image[..., 3]
    return image, None


def merge_alpha(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`split_alpha`.

    >>> merge_alpha(*split_alpha(np.zeros((4, 4, 4), np.uint8))).shape
    (4, 4, 4)
    """
    if alpha is None:
        return colour
    return np.concatenate([colour, alpha[..., None]], axis=2)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return a 3-channel RGB view of any supported image (grey is repeated, alpha dropped).

    >>> to_rgb(np.zeros((4, 5), np.uint8)).shape, to_rgb(np.zeros((4, 5, 4), np.uint8)).shape
    ((4, 5, 3), (4, 5, 3))
    """
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[..., :3]


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """Luma (ITU-R BT.601) in [0, 1] as float32, for metrics and registration.

    >>> to_gray_float(np.array([[[255, 255, 255], [255, 0, 0]]], np.uint8)).round(3)
    array([[1.   , 0.299]], dtype=float32)
    """
    f = image.astype(np.float32) / dtype_max(image.dtype) if image.dtype.kind in "ui" else image
    if f.ndim == 2:
        return f.astype(np.float32)
    if f.shape[2] == 1:
        return f[..., 0].astype(np.float32)
    return (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]).astype(np.float32)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks_fit(data: np.ndarray) -> bool:
    """False for a PNG whose chunk lengths run past the end of the file (True for non-PNGs).

    OpenCV allocates a chunk's declared length before reading it: a 7 KB file declaring a 4 GB
    chunk would cost 4 GB and seconds before failing.
    """
    if data[:8].tobytes() != PNG_SIGNATURE:
        return True
    view, pos, end = memoryview(data), 8, int(data.size)
    while pos + 8 <= end:
        (length,) = struct.unpack(">I", view[pos : pos + 4])
        kind = bytes(view[pos + 4 : pos + 8])
        pos += 12 + length
        if pos > end:
            return False
        if kind == b"IEND":
            return True
    return True


def check_size(path: Path, header: ImageHeader, max_pixels: int) -> None:
    """Refuse a file that declares more than ``max_pixels`` pixels, before decoding it.

    Raises:
        InputError: with the size, the limit and how to raise it.
    """
    if header.pixels > max_pixels:
        raise InputError(
            f"Image {path} is {header.width:,} x {header.height:,} px, above the limit of "
            f"{max_pixels:,} pixels for images read whole; pass --max-pixels to raise it, or "
            "run histoblur qc, which reads large images tile by tile."
        )


def check_sizes(paths: Sequence[Path], max_pixels: int | None = None) -> None:
    """Refuse, before any work, an input whose header declares more pixels than the limit.

    Raises:
        InputError: a missing input, or one above the limit (see :func:`check_size`).

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_image(Path(tmp) / "a.png", np.zeros((100, 100), np.uint8))
        ...     check_sizes([path], max_pixels=10_000)  # fits: nothing happens
        ...     check_sizes([path], max_pixels=9_999)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        histoblur.errors.InputError: Image ... is 100 x 100 px, above the limit of 9,999 pixels ...
    """
    limit = _MAX_PIXELS.get() if max_pixels is None else max_pixels
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"Image {path} does not exist.")
        header = read_header(path)
        if header is not None:
            check_size(Path(path), header, limit)


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file into the histoblur array convention (RGB order, uint8 or uint16).

    The declared size is checked first: files above ``max_pixels`` (default: the
    :func:`pixel_limit` in force, :data:`DEFAULT_MAX_PIXELS` unless raised) are refused
    without decoding. EXIF orientation is applied.

    Raises:
        InputError: if the file is missing, unreadable, corrupt, truncated, too large or of an
            unsupported kind.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     rgba = write_image(Path(tmp) / "rgba.png", np.zeros((8, 8, 4), np.uint8))
        ...     deep = write_image(Path(tmp) / "deep.png", np.zeros((8, 8), np.uint16))
        ...     read_image(rgba).shape, read_image(deep).dtype
        ((8, 8, 4), dtype('uint16'))
        >>> read_image("missing.png")
        Traceback (most recent call last):
        ...
        histoblur.errors.InputError: Image missing.png does not exist.
    """
    path = existing_file(path, "Image")
    header = read_header(path)
    if header is not None:
        check_size(path, header, _MAX_PIXELS.get() if max_pixels is None else max_pixels)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
        if not png_chunks_fit(data):
            raise InputError(
                f"Cannot read image {path}: the file is truncated or corrupt (a PNG chunk runs "
                "past the end of the file)."
            )
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:
        raise InputError(
            f"Cannot decode image {path}: {str(exc).strip().splitlines()[-1]}."
        ) from exc
    except OSError as exc:
        raise InputError(f"Cannot read image {path}: {exc.strerror or exc}.") from exc
    if image is None and path.suffix.lower() in (".tif", ".tiff"):
        image = _read_tiff(path)
    if image is None:
        raise InputError(
            f"Cannot read image {path}: the file is truncated, corrupt or not an image."
        )
    if image.dtype not in SUPPORTED_DTYPES:
        raise InputError(f"Image {path} has pixel type {image.dtype}; use 8- or 16-bit images.")
    if header is not None and header.orientation != 1:
        image = upright(image, header.orientation)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return check_image(np.ascontiguousarray(image), name=f"image {path}")


def _read_tiff(path: Path) -> np.ndarray | None:
    """A TIFF OpenCV cannot decode, through tifffile; None when it is corrupt or truncated."""
    try:
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            declared = tif.pages.first.dtype
            image = tif.asarray()
    except Exception:  # noqa: BLE001 - any failure means a damaged file
        return None
    if declared is None or image.dtype != declared or image.size == 0:
        return None  # tifffile filled unreadable (truncated) data with another type
    # tifffile returns RGB already; convert to OpenCV's BGR so the caller's swap is uniform.
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[..., [2, 1, 0, 3][: image.shape[2]]]
    return image


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an image atomically (PNG recommended; format from the suffix).

    Returns:
        ``path``.

    Raises:
        InputError: if the array does not follow the conventions.
        ParameterError: if the suffix names a format OpenCV cannot encode.
        OutputError: if the folder cannot be written.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_image(Path(tmp) / "mask.png", np.full((8, 8), 255, np.uint8))
        ...     path.name, sorted(p.name for p in Path(tmp).iterdir())  # no temporary left over
        ('mask.png', ['mask.png'])
    """
    path = Path(path)
    check_image(image)
    out = image
    if out.ndim == 3 and out.shape[2] == 3:
        out = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
    elif out.ndim == 3 and out.shape[2] == 4:
        out = cv2.cvtColor(out, cv2.COLOR_RGBA2BGRA)
    try:
        ok, buf = cv2.imencode(path.suffix or ".png", out)
    except cv2.error:
        ok = False
    if not ok:
        raise ParameterError(f"Cannot encode an image as {path.suffix!r}; use .png.")
    with atomic_path(path) as tmp:
        buf.tofile(str(tmp))
    return path


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as a boolean array (any non-zero pixel is foreground).

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_image(Path(tmp) / "m.png", np.array([[0, 1, 255]], np.uint8))
        ...     read_mask(path)
        array([[False,  True,  True]])
    """
    image = read_image(path)
    if image.ndim == 3:
        image = image[..., :3].max(axis=2)
    return image > 0


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside ``folder``.

    Raises:
        InputError: if the folder is missing or holds no image.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     for name in ("b.png", "a.tif", "notes.txt"):
        ...         (Path(tmp) / name).touch()
        ...     [p.name for p in list_images(tmp)]
        ['a.tif', 'b.png']
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Folder {folder} does not exist.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"Folder {folder} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def check_unique_stems(paths: Sequence[Path], advice: str) -> None:
    """Inputs are written to ``<out>/<stem>...``: two with the same stem would overwrite each other.

    Args:
        paths: the inputs.
        advice: the sentence that ends the error (what to do instead).

    Raises:
        InputError: naming the first clash.

    Examples:
        >>> check_unique_stems([Path("a/x.png"), Path("b/y.png")], "Rename one.")  # no clash
        >>> check_unique_stems([Path("a/x.png"), Path("b/x.tif")], "Rename one.")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        histoblur.errors.InputError: Inputs a/x.png and b/x.tif share the name 'x'; ... Rename one.
    """
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise InputError(
                f"Inputs {seen[p.stem]} and {p} share the name {p.stem!r}; their outputs would "
                f"overwrite each other. {advice}"
            )
        seen[p.stem] = p
