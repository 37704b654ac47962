"""Atomic writes: outputs appear complete under their final name or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from histoblur.errors import OutputError


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it.

    Raises:
        OutputError: if the folder cannot be created or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create output folder {path}: {exc.strerror or exc}.") from exc
    if not path.is_dir():
        raise OutputError(f"Output path {path} exists and is not a folder.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"Output folder {path} is not writable.")
    return path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` only on success."""
    final = Path(final)
    ensure_writable_dir(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, default_mode(0o666))
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def default_mode(base: int) -> int:
    """``base`` less the process umask: the mode a plain ``open``/``mkdir`` would give."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask & (stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO)


def write_text_atomic(final: Path, text: str) -> Path:
    """Write ``text`` to ``final`` atomically and return the path."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and move it to ``final`` when the block succeeds.

    Args:
        final: the folder to produce.
        overwrite: replace an existing non-empty ``final``; otherwise that is an error.

    Raises:
        OutputError: if ``final`` exists, is not empty and ``overwrite`` is false.
    """
    final = Path(final)
    if final.exists() and (not final.is_dir() or any(final.iterdir())) and not overwrite:
        raise OutputError(
            f"Output folder {final} already exists and is not empty; "
            "choose another path or pass --overwrite."
        )
    ensure_writable_dir(final.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, default_mode(0o777))
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
