"""The raw networks F(x, σ) `model.arch` can name for the denoising methods (and DDE's density
networks): builders (model config, data info) → network (networks/). Each registers what the config
needs to know of it: `points` (it takes 2-D toy points, not images), `conditional` (it takes σ
unless model.sigma_conditional=false; False: it never does), `scale_input` (EDM's c_in by default)
`classes` (it can be class-conditional: model.num_classes > 0) and `attention` (it has attention
layers for model.attention to place).
Each checks the data's shape first.
"""
from __future__ import annotations

from common.registry import register
from common.schema import require, require_square
from networks import MLP, NCSNv2, UNet


@register("denoiser_arch", "unet", conditional=True, scale_input=True, classes=True, attention=True)
def unet(m, info):
    """A σ-conditional U-Net (28–64 px), optionally folding patch×patch pixels into channels, with
    self-attention at the resolutions model.attention names."""
    require_square(info)
    size = info.shape[-1]
    require(size % m.patch == 0,
            f"model.patch: the data is {size} px, not a multiple of patch {m.patch}; "
            f"set model.patch to a divisor of the image size (1 folds nothing)")
    net = UNet(info.shape[0], m.width, tuple(m.mults), m.blocks, m.conditional, m.patch, m.num_classes,
               m.adaptive_norm, tuple(m.attention), m.dropout, size, m.group_channels)
    missing = sorted(set(m.attention) - set(net.resolutions))
    require(not missing, f"model.attention: {', '.join(map(str, missing))} px is not a resolution of this U-Net "
                         f"on {size} px data (its levels: {', '.join(map(str, net.resolutions))}); name some of those")
    return net


@register("denoiser_arch", "ncsnv2", conditional=False, scale_input=False)
def ncsnv2(m, info):
    """NCSNv2's RefineNet (Song & Ermon 2020): unconditional, its output scaled by 1/σ."""
    require_square(info)
    return NCSNv2(info.shape[0], m.width, info.shape[-1])


@register("denoiser_arch", "mlp", points=True, conditional=True, scale_input=True)
def mlp(m, info):
    """An MLP for 2-D toy data."""
    return MLP(info.shape[0], m.width, m.depth, m.conditional)
