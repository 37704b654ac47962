"""``histoblur qc --config FILE.yaml``: every QCConfig field from a file, options win over it,
bad files are one sentence (exit 2), and the settings used are written to OUT/qc_config.yaml."""

import json
from pathlib import Path

import pytest
import yaml

from histoblur.cli import qc as qc_cli
from histoblur.cli.main import build_parser
from histoblur.config import read_yaml
from histoblur.errors import InputError
from histoblur.inference.cohort import find_slides
from histoblur.inference.qc import QCConfig
from histoblur.synthesis.slide import make_synthetic_slide
from histoblur.wsi.pyramid import write_pyramidal_tiff
from test_qc_safety import one_error, qc  # the one-sentence refusal check, shared


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 256 x 192 pyramidal TIFF at 0.5 um/px with a blurred rectangle (one window)."""
    path = tmp_path_factory.mktemp("qc_config_slides") / "s0.tif"
    made = make_synthetic_slide((256, 192), seed=0, blur_radius=8)
    return write_pyramidal_tiff(path, made.source, made.size, mpp=0.5)


def settings(tmp_path, *argv, config=None):
    """The QCConfig ``qc`` would run with, from ``--config`` (a dict written as YAML) and argv."""
    if config is not None:
        path = tmp_path / "settings.yaml"
        path.write_text(yaml.safe_dump(config))
        argv = ("--config", str(path), *argv)
    args = build_parser(["qc"]).parse_args(["qc", "--out", str(tmp_path / "qc"), *map(str, argv)])
    return qc_cli.qc_config(args)


def test_without_a_file_or_options_the_settings_are_the_defaults(tmp_path):
    assert settings(tmp_path) == QCConfig()


def test_every_field_can_come_from_the_file(tmp_path):
    """Generic over the fields: a field added to QCConfig is a key at once."""
    every = json.loads(QCConfig(slide_mpp=0.25, force_slide_mpp=True).model_dump_json())
    assert settings(tmp_path, config=every) == QCConfig.model_validate(every)
    assert settings(tmp_path, config={"min_tissue": 0.2, "tissue_mpp": 4}).min_tissue == 0.2


def test_an_option_given_wins_over_the_file_and_one_left_out_does_not(tmp_path):
    config = {"flag_above": 0.5, "threshold": 0.7, "batch_size": 4, "force_slide_mpp": True,
              "slide_mpp": 0.25}  # fmt: skip
    resolved = settings(tmp_path, "--flag-above", "0.2", "--no-force-slide-mpp", config=config)
    assert (resolved.flag_above, resolved.force_slide_mpp) == (0.2, False)  # the options
    assert (resolved.threshold, resolved.batch_size, resolved.slide_mpp) == (0.7, 4, 0.25)
    assert settings(tmp_path, "--device", "cpu", config={"device": "auto"}).device == "cpu"


def test_slide_mpp_csv_replaces_the_files_slide_mpps(tmp_path):
    (tmp_path / "mpp.csv").write_text("slide,mpp\na.svs,0.25\n")
    resolved = settings(
        tmp_path, "--slide-mpp-csv", tmp_path / "mpp.csv", config={"slide_mpps": {"b.svs": 0.5}}
    )
    assert resolved.slide_mpps == {"a.svs": 0.25}
    assert settings(tmp_path, config={"slide_mpps": {"b.svs": 0.5}}).slide_mpps == {"b.svs": 0.5}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("tissu_mpp: 4\n", ["Unknown setting 'tissu_mpp'", "did you mean tissue_mpp?"]),
        ("min_tissue: 2\n", ["Invalid setting min_tissue in", "less than or equal to 1"]),
        ("device: gpu\n", ["Invalid setting device in", "'auto', 'cpu' or 'cuda'"]),
        ("readers: many\n", ["Invalid setting readers in", "valid integer"]),
        ("force_slide_mpp: true\n", ["--force-slide-mpp needs --slide-mpp"]),
        ("- 1\n- 2\n", ["must be a mapping of field names to values"]),
        ("mpp: [0.5\n", ["is not valid YAML"]),
    ],
)
def test_a_bad_file_is_one_sentence_exit_2_and_nothing_written(
    tmp_path, slide, capsys, content, words
):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    out = tmp_path / "qc"
    assert qc(slide, "--out", out, "--config", path) == 2
    one_error(capsys, *words)
    assert not out.exists()


def test_a_bad_option_is_named_as_the_option_even_with_a_file(tmp_path, slide, capsys):
    (tmp_path / "ok.yaml").write_text("min_tissue: 0.1\n")
    assert qc(slide, "--out", tmp_path / "qc", "--config", tmp_path / "ok.yaml",
              "--readers", "0") == 2  # fmt: skip
    one_error(capsys, "--readers")
    assert qc(slide, "--out", tmp_path / "qc", "--config", tmp_path / "missing.yaml") == 2
    one_error(capsys, "Cannot read QC config", "missing.yaml")


def test_the_settings_used_are_written_beside_the_outputs_and_read_back(tmp_path, slide, capsys):
    (tmp_path / "mine.yaml").write_text(
        "# my cohort's settings\nmin_region_um2: 500\ntissue_mpp: 4\nflag_above: 0.5\n"
    )
    out = tmp_path / "qc"
    assert qc(slide, "--out", out, "--config", tmp_path / "mine.yaml", "--device", "cpu",
              "--flag-above", "0.3") == 0  # fmt: skip
    written = out / "qc_config.yaml"
    assert written.read_text().startswith(qc_cli.CONFIG_HEADER)
    used = QCConfig.model_validate(read_yaml(written))
    assert (used.min_region_um2, used.tissue_mpp, used.flag_above, used.device) == (
        500,
        4,
        0.3,
        "cpu",
    )
    assert list(read_yaml(written)) == list(QCConfig.model_fields)  # the whole config
    parameters = json.loads((out / "s0" / "summary.json").read_text())["parameters"]
    assert parameters["tissue_mpp"] == 4 and parameters["min_region_um2"] == 500
    capsys.readouterr()
    # the written file reproduces the run: the slide is already done with these settings
    assert qc(slide, "--out", out, "--config", written) == 0
    assert "(already done)" in capsys.readouterr().err
    assert QCConfig.model_validate(read_yaml(written)) == used


def test_a_qc_config_yaml_qc_did_not_write_is_never_replaced(tmp_path, slide, capsys):
    out = tmp_path / "qc"
    out.mkdir()
    (out / "qc_config.yaml").write_text("min_tissue: 0.1\n")  # the user's own
    assert qc(slide, "--out", out) == 2
    one_error(capsys, "qc_config.yaml exists and is not the qc_config.yaml that histoblur qc")
    assert [p.name for p in out.iterdir()] == ["qc_config.yaml"]
    assert (out / "qc_config.yaml").read_text() == "min_tissue: 0.1\n"


def test_the_written_config_is_never_taken_for_a_slide(tmp_path, slide):
    out = tmp_path / "qc"
    assert qc(slide, "--out", out, "--device", "cpu") == 0
    with pytest.raises(InputError, match="is not a slide file"):
        find_slides([out / "qc_config.yaml"])
    with pytest.raises(InputError, match="holds no slide files"):  # nor is anything in OUT
        find_slides([out])


def test_a_config_asking_for_cuda_without_one_is_a_usage_error(
    tmp_path, slide, capsys, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "gpu.yaml").write_text("device: cuda\n")
    assert qc(slide, "--out", tmp_path / "qc", "--config", tmp_path / "gpu.yaml") == 2
    one_error(capsys, "no CUDA device is available")
    assert not (tmp_path / "qc").exists()
    assert qc(slide, "--out", tmp_path / "qc", "--config", tmp_path / "gpu.yaml",
              "--device", "cpu") == 0  # fmt: skip


def test_help_lists_every_field_as_a_key():
    parser = build_parser(["qc"])
    qc_parser = next(a for a in parser._actions if a.dest == "command").choices["qc"]
    text = " ".join(qc_parser.format_help().split())
    for field in QCConfig.model_fields:
        assert field in text, field


def test_find_slides_is_untouched_by_the_config_beside_real_slides(tmp_path, slide):
    folder = tmp_path / "cohort"
    folder.mkdir()
    copy = folder / "s0.tif"
    copy.write_bytes(Path(slide).read_bytes())
    (folder / "qc_config.yaml").write_text("min_tissue: 0.1\n")
    assert find_slides([folder]) == [copy]
