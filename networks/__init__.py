"""Every architecture, as a plain nn.Module built from constructor arguments only: no configs, no
losses. The GAN and denoising packages build them from a config (gan/architectures.py,
denoising/architectures.py).

    dcgan.py    DCGAN generator and critic (28, 32, 64 px)
    resnet.py   SNGAN ResNet generator and critic (32, 64 px)
    mlp.py      MLP generator and critic, and an MLP F(x, σ), for 2-D toy data
    unet.py     a small σ-conditional U-Net F(x, σ)
    ncsnv2.py   NCSNv2's RefineNet score network
    embedding.py  the σ embedding (random Fourier features of log σ); layers.py: spectral norm switch
"""
from .dcgan import DCGANDiscriminator, DCGANGenerator
from .mlp import MLP, MLPDiscriminator, MLPGenerator
from .ncsnv2 import NCSNv2
from .resnet import ResNetDiscriminator, ResNetGenerator
from .unet import UNet

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "ResNetGenerator", "ResNetDiscriminator",
           "MLPGenerator", "MLPDiscriminator", "MLP", "UNet", "NCSNv2"]
