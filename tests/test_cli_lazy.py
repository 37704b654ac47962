"""Starting ``histoblur`` is cheap: only the chosen sub-command's module is imported.

The registry in :mod:`histoblur.cli.main` lists every command with its module and help line;
the top-level parser is built from it alone, and the full parser (the docs') is the same.
"""

import json
import os
import struct
import subprocess
import sys
import zlib

import pytest

from histoblur.cli import common
from histoblur.cli.main import COMMANDS, build_parser, chosen_command, main
from histoblur.models import hub

HEAVY = ("torch", "cv2", "numpy", "scipy", "pydantic", "histoblur.inference", "histoblur.models")
CLI_MODULES = {command.module for command in COMMANDS.values()}


def imported_by(*argv: str) -> set[str]:
    """The modules a fresh interpreter has imported after ``main(argv)`` (which may exit)."""
    script = (
        "import json, sys\n"
        "from histoblur.cli.main import main\n"
        "try:\n"
        f"    main({list(argv)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_importing_the_entry_point_imports_no_command_and_nothing_heavy():
    modules = imported_by()  # main([]) is a usage error: the parser is all that ran
    assert not CLI_MODULES & modules
    assert not [m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]


def test_top_level_help_lists_every_command_without_importing_one():
    modules = imported_by("--help")
    assert not CLI_MODULES & modules
    assert "torch" not in modules and "cv2" not in modules


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["qc", "--help"], "histoblur.cli.qc"),
        (["-q", "train", "segmenter", "--help"], "histoblur.cli.train"),
        (["demo", "--help"], "histoblur.cli.demo"),
    ],
)
def test_a_command_imports_its_own_module_only(argv, module):
    modules = imported_by(*argv)
    assert CLI_MODULES & modules == {module}
    assert "histoblur.training" not in modules or module == "histoblur.cli.train"


def test_train_help_imports_no_trainer_and_demo_help_no_torch():
    assert not [m for m in imported_by("train", "--help") if m.startswith("histoblur.training")]
    assert "torch" not in imported_by("demo", "--help")


def test_the_registry_matches_what_the_modules_register():
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    registered = {choice.dest: choice.help for choice in action._choices_actions}
    assert registered == {name: command.help for name, command in COMMANDS.items()}
    assert list(action.choices) == list(COMMANDS)  # and in the registry's order


def test_the_lazy_parsers_equal_the_full_one():
    full = build_parser()
    assert build_parser([]).format_help() == full.format_help()
    full_children = next(a for a in full._actions if a.dest == "command").choices
    for name in COMMANDS:
        lazy = next(a for a in build_parser([name])._actions if a.dest == "command").choices
        assert lazy[name].format_help() == full_children[name].format_help(), name


def test_the_chosen_command_is_the_first_word_that_is_not_an_option():
    assert chosen_command(["-v", "segment", "--out", "o", "qc"]) == "segment"
    assert chosen_command(["--quiet", "train", "segmenter"]) == "train"
    assert chosen_command(["--help"]) is chosen_command([]) is chosen_command(["nosuch"]) is None
    with pytest.raises(KeyError, match="nosuch"):
        build_parser(["nosuch"])


def test_the_device_and_precision_choices_are_the_hubs():
    assert common.DEVICES == hub.DEVICES and common.PRECISIONS == hub.PRECISIONS


def test_version_and_unknown_command_still_answer(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("histoblur ")
    with pytest.raises(SystemExit) as stop:
        main(["nosuch", "--out", "x"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "invalid choice: 'nosuch'" in err and len(err.splitlines()) == 1


def test_max_pixels_below_one_is_refused_not_replaced_by_the_default(tmp_path, capsys):
    code = main(["segment", "--max-pixels", "0", "--out", str(tmp_path / "o"), "x.png"])
    assert code == 1 and "--max-pixels must be at least 1, got 0." in capsys.readouterr().err


def test_opencv_messages_stay_silent_in_a_fresh_process(tmp_path):
    """OpenCV is imported after ``main`` starts: ``OPENCV_LOG_LEVEL`` silences it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    bad = tmp_path / "bad.png"  # well-formed chunks, but no IHDR first: OpenCV logs an ERROR
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"tEXt", b"a\x00b") + chunk(b"IEND", b""))
    result = subprocess.run(
        [sys.executable, "-m", "histoblur.cli.main", "classify", "--out", str(tmp_path / "c.csv"),
         str(bad)],
        capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("histoblur: error: ")
