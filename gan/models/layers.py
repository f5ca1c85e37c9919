"""Small shared pieces of the GAN networks."""
from torch import nn

from common.spectral import spectral_norm


def sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) when enabled: W / σ_max(W), the power iteration
    run by the trainer once per critic update (common/spectral.py)."""
    return spectral_norm(module) if enabled else module


def base_size(image_size: int) -> int:
    """DCGAN nets grow from a base×base map by stride-2 steps: 7 for 28 px, 4 for 32 and 64 px."""
    for base in (4, 7):
        size = base * 2  # at least one stride-2 step
        while size < image_size:
            size *= 2
        if size == image_size:
            return base
    raise ValueError(f"image size {image_size} is not 7·2^k or 4·2^k with k >= 1 (use 28, 32 or 64)")
