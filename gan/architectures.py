"""The GAN architectures `model.arch` can name: builders (model config, data info) → (G, D) of
plain networks (networks/). Each registers what the config checks need to know of it:
`points` (it takes 2-D toy points, not images), whether its critic has BatchNorm and spectral
norm by default (model.d_batchnorm / d_spectral_norm: null), and whether it can be class-conditional
(`conditional`: model.num_classes > 0). Each checks the data's shape first.
"""
from __future__ import annotations

from common.registry import register
from common.schema import require, require_square
from networks import (DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, ResNetDiscriminator,
                      ResNetGenerator)
from networks.dcgan import require_dcgan_size
from networks.resnet import LAYOUTS


@register("gan_arch", "dcgan", critic_batchnorm=True, critic_spectral_norm=False, conditional=True)
def dcgan(m, info):
    """DCGAN (Radford et al. 2016) at 28, 32 or 64 px."""
    require_square(info)
    channels, size = info.shape[0], info.shape[-1]
    require_dcgan_size(size, "networks")
    return (DCGANGenerator(m.z_dim, size, channels, m.g_width, m.g_batchnorm, m.num_classes, m.g_class_input),
            DCGANDiscriminator(size, channels, m.d_width, m.critic_batchnorm, m.critic_spectral_norm, m.num_classes))


@register("gan_arch", "resnet", critic_batchnorm=False, critic_spectral_norm=True, conditional=True)
def resnet(m, info):
    """SNGAN's ResNets (Miyato et al. 2018) at 32 or 64 px."""
    require_square(info)
    channels, size = info.shape[0], info.shape[-1]
    require(size in LAYOUTS, f"data.image_size: the SNGAN ResNets are defined for 32 and 64 px, "
                             f"the data is {size} px; set data.image_size=32 or 64")
    return (ResNetGenerator(m.z_dim, size, channels, m.g_width, m.g_batchnorm, m.num_classes, m.g_class_input),
            ResNetDiscriminator(size, channels, m.d_width, m.critic_spectral_norm, m.num_classes))


@register("gan_arch", "mlp", points=True, critic_batchnorm=False, critic_spectral_norm=False)
def mlp(m, info):
    """MLPs for 2-D toy data."""
    return (MLPGenerator(m.z_dim, info.shape[0], m.g_width, m.depth),
            MLPDiscriminator(info.shape[0], m.d_width, m.depth, m.critic_spectral_norm))
