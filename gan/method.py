"""`method: gan`: a generator and a critic trained with the one-loss step or the alternating one."""
from __future__ import annotations

import torch

from common.config import require
from common.method import Method, require_arch_fits_data
from common.registry import register_method
from common.spectral import power_iteration
from .config import GANConfig, GANModelConfig, GANOptimConfig
from .losses import LOSSES
from networks import (DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator,
                     ResNetDiscriminator, ResNetGenerator)
from .steps import (bracket_one_loss_objective, critic_objective, fused_one_loss_objective, generator_objective,
                    one_loss_objective)

OBJECTIVES = {"one_loss": one_loss_objective, "one_loss_bracket": bracket_one_loss_objective,
              "one_loss_fused": fused_one_loss_objective}


def build_networks(m: GANModelConfig, info):
    """(G, D) for a model config and the data's shape."""
    if m.arch == "mlp":
        return (MLPGenerator(m.z_dim, info.shape[0], m.g_width, m.depth),
                MLPDiscriminator(info.shape[0], m.d_width, m.depth, m.critic_spectral_norm))
    channels, size = info.shape[0], info.shape[-1]
    if m.arch == "dcgan":
        return (DCGANGenerator(m.z_dim, size, channels, m.g_width, m.g_batchnorm),
                DCGANDiscriminator(size, channels, m.d_width, m.critic_batchnorm, m.critic_spectral_norm))
    return (ResNetGenerator(m.z_dim, size, channels, m.g_width, m.g_batchnorm),
            ResNetDiscriminator(size, channels, m.d_width, m.critic_spectral_norm))


@register_method("gan")
class GAN(Method):
    ModelConfig, OptimConfig, Config = GANModelConfig, GANOptimConfig, GANConfig
    networks = ("G", "D")
    ema_networks = ("G",)

    @classmethod
    def check_config(cls, cfg):
        require_arch_fits_data(cfg, arch=(cfg.model.arch, "dcgan/resnet"))
        if cfg.gan.reg != "none":
            require(not cfg.model.critic_batchnorm,
                    f"gan.reg: {cfg.gan.reg} penalises ∇ₓD(x) per example, but a BatchNorm critic couples "
                    f"the batch (each logit depends on every input); set model.d_batchnorm=false or gan.reg=none")
        if cfg.gan.step == "one_loss_fused":
            require(getattr(LOSSES[cfg.gan.loss], "fusable", False),
                    f"gan.step: one_loss_fused is exact only for losses whose critic derivative never "
                    f"vanishes (wasserstein, logistic), not {cfg.gan.loss}; use gan.step=one_loss")
            require(not cfg.model.critic_batchnorm,
                    "gan.step: one_loss_fused needs a critic that treats samples independently; "
                    "set model.d_batchnorm=false or use gan.step=one_loss")
        if cfg.model.arch == "resnet":
            require(cfg.data.image_size in (32, 64),
                    "data.image_size: the SNGAN ResNets are defined for 32 and 64 px; set 32 or 64")

    @classmethod
    def needs_double_backward(cls, cfg):
        return cfg.gan.reg != "none"

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        G, D = build_networks(cfg.model, info)
        self.add_network("G", G)
        self.add_network("D", D)
        smoothing = {"temperature": cfg.gan.temperature} if cfg.gan.loss == "smooth_hinge" else {}
        self.loss = LOSSES[cfg.gan.loss](**smoothing)
        self.batches_per_step = cfg.gan.n_critic
        o = cfg.optim
        if cfg.gan.step != "alternating":
            # TTUR = per-group learning rates in one optimizer, stepped once for both players.
            self.optimizers = {"GD": self.adam({"G": o.lr_g, "D": o.lr_d})}
        else:
            self.optimizers = {"G": self.adam({"G": o.lr_g}), "D": self.adam({"D": o.lr_d})}

    # Training forwards go through the DDP wrappers when distributed (Method.module).
    G = property(lambda self: self.module("G"))
    D = property(lambda self: self.module("D"))

    def sample_latents(self, n, generator=None):
        return torch.randn(n, self.cfg.model.z_dim, device=self.device, generator=generator)

    def example_inputs(self, name, n):
        return (self.sample_latents(n),) if name == "G" else super().example_inputs(name, n)

    def training_step(self, batch):
        reals = batch.chunk(self.batches_per_step)
        if self.cfg.gan.step == "alternating":
            return self._alternating_step(reals)
        return self._one_loss_step(reals)

    def _critic_only(self, opt, x_real):
        """A critic update with G frozen (the extra n_critic − 1 steps)."""
        g = self.cfg.gan
        with torch.no_grad(), self.autocast():
            x_fake = self.nets["G"](self.sample_latents(x_real.shape[0]))
        power_iteration(self.nets["D"])
        with self.autocast():
            d_total, _, stats = self.compiled(critic_objective)(self.D, self.loss, x_real, x_fake, g.reg,
                                                                g.reg_weight)
        opt.zero_grad(set_to_none=True)
        d_total.backward()
        self.clip_gradients("D")
        opt.step()
        return stats

    def _one_loss_step(self, reals):
        g, opt = self.cfg.gan, self.optimizers["GD"]
        for x_real in reals[:-1]:
            self._critic_only(opt, x_real)
        x_real = reals[-1]
        objective = self.compiled(OBJECTIVES[g.step])
        z = self.sample_latents(x_real.shape[0])
        power_iteration(self.nets["D"])  # once: every critic call of the update sees the same σ estimates
        with self.autocast():
            total, stats = objective(self.G, self.D, self.loss, x_real, z, g.reg, g.reg_weight)
        opt.zero_grad(set_to_none=True)
        total.backward()
        self.clip_gradients("G", "D")
        opt.step()
        return stats

    def _alternating_step(self, reals):
        g, opt_g, opt_d = self.cfg.gan, self.optimizers["G"], self.optimizers["D"]
        for x_real in reals[:-1]:
            self._critic_only(opt_d, x_real)
        x_real = reals[-1]
        z = self.sample_latents(x_real.shape[0])
        power_iteration(self.nets["D"])
        with self.autocast():
            # G's forward stays outside the compiled critic objective: a compiled function is one
            # autograd node, and the critic's backward would free what the generator's needs.
            x_fake = self.G(z)
            d_total, _, stats = self.compiled(critic_objective)(self.D, self.loss, x_real, x_fake.detach(),
                                                                g.reg, g.reg_weight)
        opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        self.clip_gradients("D")
        opt_d.step()
        # Generator step on the same fakes, through D's stopped weights (no weight gradient of D).
        power_iteration(self.nets["D"])  # D has new weights (a training-mode forward of torch's SN would iterate here)
        with self.autocast():
            g_loss = self.compiled(generator_objective)(self.nets["D"], self.loss, x_fake)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.clip_gradients("G")
        opt_g.step()
        stats["g_loss"] = g_loss.detach()
        return stats

    def sample(self, n, generator=None, ema=True, latents=None, progress=False):
        return self.generate("G", n, generator, ema, latents)  # one network pass: no progress to show
