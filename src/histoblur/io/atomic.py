"""Atomic writes: outputs appear complete under their final name or not at all."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from histoblur.errors import OutputError
from histoblur.io.paths import check_output_folder

# temporary names carry PID@HOST (.NAME.tmp-PID@HOST-RANDOM) so a later run can tell a stale one
_OWNER = re.compile(r"-(\d+)@([A-Za-z0-9]*)-")
# folders named by earlier versions (.NAME.tmp-RANDOM) are stale once this old
LEGACY_STALE_SECONDS = 3600.0


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it.

    Raises:
        OutputError: if the folder cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"Output path {path} exists and is not a folder.")
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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix, dir=final.parent)
    except OSError as exc:
        raise OutputError(f"Cannot write {final}: {exc.strerror or exc}.") from exc
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


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def owner_tag() -> str:
    """``PID@HOST`` of this process, for the names of temporary files and folders."""
    return f"{os.getpid()}@{_host()}"


def owner_ended(name: str) -> bool | None:
    """Whether the process named in a temporary ``name`` (by :func:`owner_tag`) has ended.

    None when the name carries no owner, or one on another host (which cannot be checked).
    """
    owner = _OWNER.search(name)
    if owner is None or owner.group(2) != _host():
        return None
    return not _alive(int(owner.group(1)))


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Delete the temporary folders of ``final`` left by runs that were killed.

    A temporary folder is stale when the process that made it (on this host) has ended; one
    made on another host is left alone. Returns the folders removed.
    """
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    now = time.time()
    for tmp in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):
        if not tmp.is_dir():
            continue
        stale = owner_ended(tmp.name[len(final.name) + 1 :])
        if stale is None and _OWNER.search(tmp.name[len(final.name) + 1 :]) is None:
            try:  # a name from an older version, without an owner
                stale = now - tmp.stat().st_mtime > LEGACY_STALE_SECONDS
            except OSError:
                continue
        if stale:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = False, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """Build a folder under a temporary name and move it to ``final`` when the block succeeds.

    Temporary folders of ``final`` left by killed runs are removed first.

    Args:
        final: the folder to produce.
        overwrite: replace an existing non-empty ``final``; otherwise that is an error.
        inputs: paths the work reads: a ``final`` that is or holds one is refused.

    Raises:
        OutputError: if ``final`` exists, is not empty and ``overwrite`` is false, or if it
            holds an input.
    """
    final = check_output_folder(final, inputs, overwrite)
    ensure_writable_dir(final.parent)
    remove_stale_temporaries(final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{owner_tag()}-", dir=final.parent))
    except OSError as exc:
        raise OutputError(f"Cannot write in {final.parent}: {exc.strerror or exc}.") from exc
    try:
        yield tmp
        os.chmod(tmp, default_mode(0o777))
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
