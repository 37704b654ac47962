"""Networks (``nn.Module`` only) and the registry that rebuilds them from checkpoints."""

from histoblur.models.registry import ARCHITECTURES, build_model, load_model
from histoblur.models.unet import UNet, UNetConfig

__all__ = ["ARCHITECTURES", "UNet", "UNetConfig", "build_model", "load_model"]
