"""The GAN method's config sections: model:, optim: and gan:."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from common.config import OptimConfig
from common.registry import lookup, names
from common.schema import one_of, require


@dataclass
class GANModelConfig:
    arch: one_of("gan_arch") = "dcgan"     # gan/architectures.py
    z_dim: int = 100
    g_width: int = 64                      # DCGAN ngf / SNGAN generator channels / MLP width
    d_width: int = 64                      # DCGAN ndf / SNGAN critic channels / MLP width
    g_batchnorm: bool = True
    d_batchnorm: Optional[bool] = None     # null: the architecture's default (DCGAN yes, others no)
    d_spectral_norm: Optional[bool] = None  # null: the architecture's default (SNGAN yes, others no)
    depth: int = 3                         # MLP hidden layers
    # class-conditional G (conditional BatchNorm) and D (projection head), trained on the data's labels:
    # the data set's number of classes (10 for Fashion-MNIST and CIFAR-10); 0 = unconditional
    num_classes: int = 0
    # a conditional G also reads a learnt class embedding beside z (Mirza & Osindero 2014's input), so
    # the class shapes the first feature map's layout, which conditional BatchNorm's per-channel scale
    # and shift cannot; false = conditional BatchNorm only (Miyato & Koyama 2018)
    g_class_input: bool = True

    def check(self, path):
        require(self.num_classes >= 0, f"{path}.num_classes: must be >= 0 (0 = unconditional), got {self.num_classes}")
        conditional = [n for n in names("gan_arch") if getattr(lookup("gan_arch", n), "conditional", False)]
        require(not self.num_classes or self.arch in conditional,
                f"{path}.num_classes: the {self.arch} networks are unconditional; use arch: {'/'.join(conditional)} "
                f"or num_classes: 0")
        with_batchnorm = [n for n in names("gan_arch") if lookup("gan_arch", n).critic_batchnorm]
        require(not (self.d_batchnorm and self.arch not in with_batchnorm),
                f"{path}.d_batchnorm: only the {'/'.join(with_batchnorm)} critic has BatchNorm; remove it or "
                f"set arch: {with_batchnorm[0]}")
        for key in ("z_dim", "g_width", "d_width", "depth"):
            require(getattr(self, key) > 0, f"{path}.{key}: must be positive")

    @property
    def critic_batchnorm(self) -> bool:
        return lookup("gan_arch", self.arch).critic_batchnorm if self.d_batchnorm is None else self.d_batchnorm

    @property
    def critic_spectral_norm(self) -> bool:
        default = lookup("gan_arch", self.arch).critic_spectral_norm
        return default if self.d_spectral_norm is None else self.d_spectral_norm


@dataclass
class GANOptimConfig(OptimConfig):
    betas: tuple[float, float] = (0.5, 0.999)
    lr_g: float = 2e-4
    lr_d: float = 2e-4                     # lr_d > lr_g is TTUR (Heusel et al. 2017)


@dataclass
class GANConfig:
    # one_loss: D's weights stopped on the generator's term; one_loss_bracket: the seed's add-and-subtract
    # form (same gradients, less precise); one_loss_fused: one critic pass on the fakes (gan/steps.py)
    step: one_of("gan_step") = "one_loss"  # gan/steps.py
    loss: one_of("gan_loss") = "logistic"  # gan/losses.py
    temperature: float = 1.0               # K of smooth_hinge (K → ∞: hinge) and of the smoothed accuracies
    n_critic: int = 1                      # critic updates per generator update
    reg: one_of("gan_reg") = "none"        # gan/losses.py: none | r1 | gp
    reg_weight: float = 10.0               # γ of R1 (adds γ/2·E‖∇D(x)‖²) or λ of the gradient penalty
    # DiffAugment (Zhao et al. 2020): the critic sees every real and generated image through these
    # differentiable augmentations, in order (gan/augment.py: color, translation, cutout); [] = none
    augment: list[one_of("gan_augment")] = field(default_factory=list)

    def check(self, path):
        require(self.n_critic >= 1, f"{path}.n_critic: must be >= 1")
        require(self.temperature > 0, f"{path}.temperature: must be positive")
        require(self.reg_weight >= 0, f"{path}.reg_weight: must be >= 0, got {self.reg_weight}")
