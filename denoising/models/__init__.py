"""Raw networks F(x, σ) → same shape as x; the Denoiser turns them into D, s or E."""
from .mlp import MLP
from .ncsnv2 import NCSNv2
from .unet import UNet

__all__ = ["MLP", "UNet", "NCSNv2"]
