"""Every command's messages go through the ``histoblur`` logger: -q, default, -v; usage errors."""

import numpy as np
import pytest

from histoblur.cli.main import build_parser, leaf_parsers, main
from histoblur.io.images import write_image


@pytest.fixture
def tile(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    return write_image(tmp_path / "tile.png", image)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_default_prints_info_messages_quiet_hides_them_verbose_adds_debug(tmp_path, tile, capsys):
    code, _, err = run(capsys, "segment", "--out", tmp_path / "a", tile)
    assert code == 0 and "Wrote masks" in err and "loaded a blur segmentation model" not in err
    code, _, err = run(capsys, "segment", "-q", "--out", tmp_path / "b", tile)
    assert code == 0 and err == ""
    assert (tmp_path / "b" / "tile_mask.png").is_file()  # quiet, not idle
    code, _, err = run(capsys, "-v", "segment", "--out", tmp_path / "c", tile)
    assert code == 0 and "loaded a blur segmentation model" in err and "Wrote masks" in err


def test_errors_are_shown_even_when_quiet(tmp_path, capsys):
    code, _, err = run(capsys, "segment", "-q", "--out", tmp_path / "o", tmp_path / "missing.png")
    assert code == 1 and err.startswith("histoblur: error:") and len(err.strip().splitlines()) == 1


def test_quiet_and_verbose_together_are_refused(tmp_path, tile, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["segment", "-q", "-v", "--out", str(tmp_path / "o"), str(tile)])
    assert stop.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["segment", "--tile", "abc", "x.png"], ["synth", "blur", "--bogus"], [], ["nosuch"]],
)
def test_usage_errors_are_one_line_pointing_at_help(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert len(err.strip().splitlines()) == 1 and err.rstrip().endswith("--help).")


def test_every_command_takes_quiet_and_verbose():
    for parser in leaf_parsers(build_parser()):
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, parser.prog
