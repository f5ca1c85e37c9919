"""Small shared pieces of the GAN networks."""
import contextlib

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) when enabled: W / σ_max(W), one power iteration per step."""
    return spectral_norm(module) if enabled else module


def base_size(image_size: int) -> int:
    """DCGAN nets grow from a base×base map by stride-2 steps: 7 for 28 px, 4 for 32 and 64 px."""
    for base in (4, 7):
        size = base
        while size < image_size:
            size *= 2
        if size == image_size:
            return base
    raise ValueError(f"image size {image_size} is not 7·2^k or 4·2^k (use 28, 32 or 64)")


@contextlib.contextmanager
def frozen_power_iteration(module: nn.Module):
    """Spectral norm runs a power iteration (updating its u, v estimates) on every training-mode
    forward. Within one update every critic call must see the same σ estimate: otherwise D(G(z))
    and D(sg(G(z))) differ and the one-loss bracket is no longer zero. Inside this block the
    estimates are used but not updated (the first call of the update has already refreshed them)."""
    norms = [m for m in module.modules() if type(m).__name__ == "_SpectralNorm" and m.training]
    for m in norms:
        m.train(False)
    try:
        yield
    finally:
        for m in norms:
            m.train(True)
