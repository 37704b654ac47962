"""Output paths that never destroy an input.

Every command checks its outputs against its inputs before it starts: an output that is an input
(the same path, a symbolic link to it or a hard link of it) is refused, a folder that would be
replaced as a whole must not hold an input, and an existing output file is replaced only when the
user asked for it (``--overwrite``).

>>> from pathlib import Path
>>> same_file(Path("a/b.png"), Path("a/./b.png"))
True
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from histoblur.errors import InputError, OutputError, ParameterError


def existing_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path when it is an existing file; else one sentence naming ``what``.

    >>> existing_file("missing.png", "Image")
    Traceback (most recent call last):
    ...
    histoblur.errors.InputError: Image missing.png does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist.")
    if path.is_dir():
        raise InputError(f"{what} path {path} is a folder, not a file.")
    return path


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file or folder (links followed, hard links included)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def holds(folder: Path, path: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (links resolved)."""
    f, p = Path(folder).resolve(), Path(path).resolve()
    return p == f or f in p.parents or same_file(folder, path)


def refuse_input(out: Path, inputs: Iterable[Path], option: str = "--out") -> None:
    """Refuse an output that is one of the inputs.

    Raises:
        OutputError: naming the input.
    """
    for path in inputs:
        if path is not None and same_file(out, path):
            raise OutputError(
                f"{option} {out} is the input {path}; histoblur never writes over an input, "
                "so choose another output path."
            )


def refuse_folder_with_inputs(out: Path, inputs: Iterable[Path], option: str = "--out") -> None:
    """Refuse an output folder (to be replaced as a whole) that is or holds an input.

    An input file is found in ``out`` by path or by inode (a link to it). So is a file inside an
    input *folder*: when ``out`` holds a file with more than one hard link, the input folders
    are walked (once, at most :data:`MAX_SCANNED` files, skipping ``out`` itself) for it.

    Raises:
        OutputError: naming the input.
    """
    inputs = [Path(p) for p in inputs if p is not None]
    found = _inodes(out) if inputs and Path(out).is_dir() else {}
    for path in inputs:
        held = holds(out, path)
        if not held and path.is_file():
            stat = path.stat()
            held = (stat.st_dev, stat.st_ino) in found
        if held:
            raise OutputError(
                f"{option} {out} holds the input {path} (or a link to it); replacing it would "
                "delete that input, so choose an output folder that holds no input."
            )
    linked = {key for key, links in found.items() if links > 1}
    folders = [p for p in inputs if p.is_dir()]
    if linked and folders:
        hit = _linked_input(Path(out), folders, linked)
        if hit is not None:
            raise OutputError(
                f"{option} {out} holds a hard link of the input {hit}; replacing it would "
                "delete that link, so choose an output folder that holds no input."
            )


MAX_SCANNED = 200_000  # files of input folders looked at for hard links into an output folder


def _inodes(folder: Path) -> dict[tuple[int, int], int]:
    """(device, inode) -> link count of every file under ``folder`` (links followed)."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            found[(stat.st_dev, stat.st_ino)] = stat.st_nlink
    return found


def _linked_input(out: Path, folders: Sequence[Path], linked: set[tuple[int, int]]) -> Path | None:
    """A file under ``folders`` (``out`` left out) whose inode is in ``linked``, if any.

    Each folder is walked once (nested input folders with their outermost one); the walk
    stops at the first hit. Past :data:`MAX_SCANNED` files it gives up and refuses: an
    output folder that holds hard-linked files next to huge inputs is too costly to clear.

    Raises:
        OutputError: too many files to check.
    """
    out_resolved = out.resolve()
    devices = {dev for dev, _ in linked}
    roots = sorted({f.resolve() for f in folders}, key=lambda f: len(f.parts))
    outer: list[Path] = []
    for root in roots:
        if not any(o == root or o in root.parents for o in outer):
            outer.append(root)
    scanned = 0
    for root in outer:
        try:
            if root.stat().st_dev not in devices:  # hard links never cross file systems
                continue
        except OSError:
            continue
        for here, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if Path(here, d).resolve() != out_resolved]
            for name in files:
                scanned += 1
                if scanned > MAX_SCANNED:
                    raise OutputError(
                        f"{out} holds hard-linked files and the input folders hold more than "
                        f"{MAX_SCANNED} files to check them against; choose an output folder "
                        "without hard links."
                    )
                path = os.path.join(here, name)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue
                if (stat.st_dev, stat.st_ino) in linked:
                    return Path(path)
    return None


def check_output_folder(
    out: Path, inputs: Iterable[Path] = (), overwrite: bool = False, option: str = "--out"
) -> Path:
    """Check a folder output that will be replaced as a whole, before any work.

    Raises:
        OutputError: ``out`` is or holds an input, is an existing file, or is a non-empty
            folder without ``overwrite``.
    """
    out = Path(out)
    refuse_folder_with_inputs(out, inputs, option)
    if out.exists() and not out.is_dir():
        raise OutputError(f"Output folder {out} is an existing file; choose a folder path.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(
            f"Output folder {out} already exists and is not empty; "
            "choose another path or pass --overwrite."
        )
    return out


def check_output_file(
    out: Path,
    inputs: Iterable[Path] = (),
    overwrite: bool = False,
    suffixes: Sequence[str] = (),
    option: str = "--out",
) -> Path:
    """Check a file output before any work: not an input, not a folder, known suffix, new.

    Args:
        out: the file to write.
        inputs: the command's inputs.
        overwrite: an existing ``out`` may be replaced.
        suffixes: allowed suffixes (lower case, with the dot); empty: any.
        option: the option's name, for the message.

    Raises:
        OutputError: ``out`` is an input, a folder, or exists without ``overwrite``.
        ParameterError: ``out`` has another suffix.
    """
    out = Path(out)
    refuse_input(out, inputs, option)
    if out.is_dir():
        example = out / f"result{suffixes[0] if suffixes else ''}"
        raise OutputError(f"{option} {out} is a folder; give a file name such as {example}.")
    if suffixes and out.suffix.lower() not in suffixes:
        raise ParameterError(
            f"{option} {out} must end in {' or '.join(suffixes)} (got "
            f"{out.suffix or 'no suffix'!r})."
        )
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite to replace it.")
    return out


def check_output_files(
    outs: Sequence[Path], inputs: Iterable[Path] = (), overwrite: bool = False
) -> None:
    """Check the files a command will write into a folder (see :func:`check_output_file`).

    Raises:
        OutputError: an output is an input, or outputs exist without ``overwrite``.
    """
    inputs = list(inputs)
    existing = []
    for out in outs:
        refuse_input(out, inputs, "output")
        if out.is_dir():
            raise OutputError(f"Output {out} is an existing folder; choose another --out.")
        if out.exists():
            existing.append(out)
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise OutputError(
            f"{existing[0]}{more} already exist(s); pass --overwrite to replace them or choose "
            "another --out."
        )
