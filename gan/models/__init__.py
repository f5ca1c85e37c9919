"""GAN networks: plain nn.Modules built from constructor arguments only."""
from .dcgan import DCGANDiscriminator, DCGANGenerator
from .mlp import MLPDiscriminator, MLPGenerator
from .resnet import ResNetDiscriminator, ResNetGenerator

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "ResNetGenerator", "ResNetDiscriminator",
           "MLPGenerator", "MLPDiscriminator"]
