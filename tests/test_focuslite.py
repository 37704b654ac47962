"""FocusLiteNN: size, output shape, min pooling, and a checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from histoblur.io.checkpoints import save_checkpoint
from histoblur.models.focuslite import FocusLiteConfig, FocusLiteNN
from histoblur.models.registry import build_model, load_model


def make(seed: int = 0, **fields: int) -> FocusLiteNN:
    torch.manual_seed(seed)
    return FocusLiteNN(FocusLiteConfig(**fields)).eval()


def test_the_single_channel_network_has_148_parameters():
    assert sum(p.numel() for p in make().parameters()) == 3 * 7 * 7 + 1
    assert sum(p.numel() for p in make(channels=4).parameters()) == 4 * (3 * 49 + 1) + 4 + 1


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("hw", [(7, 7), (7, 12), (31, 9), (64, 64), (128, 96)])
def test_one_logit_per_image_for_any_size_from_the_kernel_up(channels, hw):
    with torch.no_grad():
        out = make(channels=channels)(torch.rand(3, 3, *hw))
    assert out.shape == (3, 1) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_sides_below_the_kernel_are_refused():
    with pytest.raises(ValueError, match="at least its kernel"):
        make()(torch.rand(1, 3, 6, 32))


def test_the_score_is_the_minimum_of_the_response_map():
    net = make()
    x = torch.rand(2, 3, 40, 50, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(net(x)[:, 0], net.response(x).amin(dim=(1, 2, 3)))


def test_a_textured_corner_lowers_the_score_of_a_flat_image():
    """Min pooling: the flat image responds the same everywhere; texture in one corner moves
    some responses below that level (a zero-mean change moves some down), and the untouched
    rest keeps the flat level, so the minimum, the score, can only fall."""
    net = make()
    flat = torch.full((1, 3, 64, 64), 0.5)
    textured = flat.clone()
    g = torch.Generator().manual_seed(2)
    textured[..., :16, :16] = torch.rand(1, 3, 16, 16, generator=g)
    with torch.no_grad():
        assert net(textured).item() < net(flat).item()


def test_a_checkpoint_round_trip_through_the_registry(tmp_path):
    net = make(seed=3, channels=2)
    assert isinstance(build_model({"arch": "focuslite"}), FocusLiteNN)
    folder = save_checkpoint(
        tmp_path / "ckpt", net.state_dict(), {"task": "focus", "model": net.config.model_dump()}
    )
    loaded, config = load_model(folder)
    assert isinstance(loaded, FocusLiteNN) and loaded.config == net.config
    assert config["model"]["arch"] == "focuslite"
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
