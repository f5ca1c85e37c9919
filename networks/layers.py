"""Small pieces shared by the networks."""
from torch import nn

from .spectral import spectral_norm


def sn(module: nn.Module, enabled: bool) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) when enabled: W / σ_max(W), the power iteration
    run by the trainer once per critic update (networks/spectral.py)."""
    return spectral_norm(module) if enabled else module
