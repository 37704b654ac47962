"""Image files and the array conventions every histoblur function shares.

Arrays are ``(H, W)`` greyscale or ``(H, W, C)`` with C = 3 (RGB) or 4 (RGBA), dtype uint8 or
uint16, channels in RGB order. Files are read with OpenCV (PNG, JPEG, TIFF, BMP) and written as
PNG atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from histoblur.errors import InputError, ParameterError
from histoblur.io.atomic import atomic_path

SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate the array conventions and return the image unchanged.

    Raises:
        InputError: for an unsupported dtype, channel count or an empty image.
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
    """Largest value of an integer image dtype (255 or 65535)."""
    return float(np.iinfo(dtype).max)


def to_float(image: np.ndarray) -> np.ndarray:
    """Scale an integer image to float32 in [0, 1]."""
    return image.astype(np.float32) / dtype_max(image.dtype)


def from_float(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round a [0, 1] float image back to an integer dtype, clipping out-of-range values."""
    peak = dtype_max(np.dtype(dtype))
    return np.clip(np.rint(image * peak), 0, peak).astype(dtype)


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split an RGBA image into colour and alpha; other images return ``(image, None)``."""
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., :3], image[..., 3]
    return image, None


def merge_alpha(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`split_alpha`."""
    if alpha is None:
        return colour
    return np.concatenate([colour, alpha[..., None]], axis=2)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return a 3-channel RGB view of any supported image (grey is repeated, alpha dropped)."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image[..., :3]


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """Luma (ITU-R BT.601) in [0, 1] as float32, for metrics and registration."""
    f = image.astype(np.float32) / dtype_max(image.dtype) if image.dtype.kind in "ui" else image
    if f.ndim == 2:
        return f.astype(np.float32)
    if f.shape[2] == 1:
        return f[..., 0].astype(np.float32)
    return (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]).astype(np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into the histoblur array convention (RGB order, uint8 or uint16).

    Raises:
        InputError: if the file is missing, unreadable, corrupt or of an unsupported kind.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Image {path} does not exist.")
    if path.is_dir():
        raise InputError(f"Image path {path} is a folder, not a file.")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None and path.suffix.lower() in (".tif", ".tiff"):
        image = _read_tiff(path)
    if image is None:
        raise InputError(f"Cannot read image {path}: the file is corrupt or not an image.")
    if image.dtype not in SUPPORTED_DTYPES:
        raise InputError(f"Image {path} has pixel type {image.dtype}; use 8- or 16-bit images.")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return check_image(np.ascontiguousarray(image), name=f"image {path}")


def _read_tiff(path: Path) -> np.ndarray | None:
    try:
        import tifffile

        image = tifffile.imread(str(path))
    except Exception:
        return None
    # tifffile returns RGB already; convert to OpenCV's BGR so the caller's swap is uniform.
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[..., [2, 1, 0, 3][: image.shape[2]]]
    return image


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an image atomically (PNG recommended; format from the suffix).

    Raises:
        InputError: if the array does not follow the conventions.
        OutputError: if the folder cannot be written.
    """
    path = Path(path)
    check_image(image)
    out = image
    if out.ndim == 3 and out.shape[2] == 3:
        out = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
    elif out.ndim == 3 and out.shape[2] == 4:
        out = cv2.cvtColor(out, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(path.suffix or ".png", out)
    if not ok:
        raise ParameterError(f"Cannot encode an image as {path.suffix!r}; use .png.")
    with atomic_path(path) as tmp:
        buf.tofile(str(tmp))
    return path


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as a boolean array (any non-zero pixel is foreground)."""
    image = read_image(path)
    if image.ndim == 3:
        image = image[..., :3].max(axis=2)
    return image > 0


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside ``folder``.

    Raises:
        InputError: if the folder is missing or holds no image.
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
    """
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise InputError(
                f"Inputs {seen[p.stem]} and {p} share the name {p.stem!r}; their outputs would "
                f"overwrite each other. {advice}"
            )
        seen[p.stem] = p
