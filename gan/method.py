"""`method: gan`: a generator and a critic trained with the one-loss step or the alternating one."""
from __future__ import annotations

import inspect

import torch

from common.method import GeneratorMethod, require_arch_fits_data
from common.registry import lookup, names, register
from common.schema import require
from common.spectral import power_iteration
from . import architectures, losses  # noqa: F401  (register the architectures and losses)
from .config import GANConfig, GANModelConfig, GANOptimConfig
from .steps import (bracket_one_loss_objective, critic_objective, fused_one_loss_objective, generator_objective,
                    one_loss_objective)

OBJECTIVES = {"one_loss": one_loss_objective, "one_loss_bracket": bracket_one_loss_objective,
              "one_loss_fused": fused_one_loss_objective}


def build_loss(g: GANConfig):
    """The loss gan.loss names, its constructor's arguments taken from the gan: section by name."""
    cls = lookup("gan_loss", g.loss, "gan.loss")
    return cls(**{k: getattr(g, k) for k in inspect.signature(cls).parameters if hasattr(g, k)})


@register("method", "gan")
class GAN(GeneratorMethod):
    ModelConfig, OptimConfig, Config = GANModelConfig, GANOptimConfig, GANConfig
    networks = ("G", "D")
    ema_networks = ("G",)
    batches_per_step_key = "gan.n_critic"

    @classmethod
    def check_config(cls, cfg):
        require_arch_fits_data(cfg, "gan_arch")
        if cfg.gan.reg != "none":
            require(not cfg.model.critic_batchnorm,
                    f"gan.reg: {cfg.gan.reg} penalises ∇ₓD(x) per example, but a BatchNorm critic couples "
                    f"the batch (each logit depends on every input); set model.d_batchnorm=false or gan.reg=none")
        if cfg.gan.step == "one_loss_fused":
            fusable = [n for n in names("gan_loss") if getattr(lookup("gan_loss", n), "fusable", False)]
            require(cfg.gan.loss in fusable,
                    f"gan.step: one_loss_fused is exact only for losses whose critic derivative never "
                    f"vanishes ({', '.join(fusable)}), not {cfg.gan.loss}; use gan.step=one_loss")
            require(not cfg.model.critic_batchnorm,
                    "gan.step: one_loss_fused needs a critic that treats samples independently; "
                    "set model.d_batchnorm=false or use gan.step=one_loss")

    @classmethod
    def needs_double_backward(cls, cfg):
        return cfg.gan.reg != "none"

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        G, D = lookup("gan_arch", cfg.model.arch)(cfg.model, info)
        self.add_network("G", G)
        self.add_network("D", D)
        self.loss = build_loss(cfg.gan)
        self.batches_per_step = cfg.gan.n_critic
        o = cfg.optim
        if cfg.gan.step != "alternating":
            # TTUR = per-group learning rates in one optimizer, stepped once for both players.
            self.optimizers = {"GD": self.adam({"G": o.lr_g, "D": o.lr_d})}
        else:
            self.optimizers = {"G": self.adam({"G": o.lr_g}), "D": self.adam({"D": o.lr_d})}

    def training_step(self, batch):
        reals = batch.chunk(self.batches_per_step)
        if self.cfg.gan.step == "alternating":
            return self._alternating_step(reals)
        return self._one_loss_step(reals)

    def _critic_only(self, opt, x_real):
        """A critic update with G frozen (the extra n_critic − 1 steps)."""
        g, G, D = self.cfg.gan, self.training_net("G"), self.training_net("D")
        with torch.no_grad(), self.autocast():
            x_fake = G(self.sample_latents(x_real.shape[0]))
        power_iteration(D)
        with self.autocast():
            d_total, _, stats = self.compiled(critic_objective)(D, self.loss, x_real, x_fake, g.reg, g.reg_weight)
        opt.zero_grad(set_to_none=True)
        d_total.backward()
        self.clip_gradients("D")
        opt.step()
        return stats

    def _one_loss_step(self, reals):
        g, opt = self.cfg.gan, self.optimizers["GD"]
        for x_real in reals[:-1]:
            self._critic_only(opt, x_real)
        G, D = self.training_net("G"), self.training_net("D")
        x_real = reals[-1]
        objective = self.compiled(OBJECTIVES[g.step])
        z = self.sample_latents(x_real.shape[0])
        power_iteration(D)  # once: every critic call of the update sees the same σ estimates
        with self.autocast():
            total, stats = objective(G, D, self.loss, x_real, z, g.reg, g.reg_weight)
        opt.zero_grad(set_to_none=True)
        total.backward()
        self.clip_gradients("G", "D")
        opt.step()
        return stats

    def _alternating_step(self, reals):
        g, opt_g, opt_d = self.cfg.gan, self.optimizers["G"], self.optimizers["D"]
        for x_real in reals[:-1]:
            self._critic_only(opt_d, x_real)
        G, D = self.training_net("G"), self.training_net("D")
        x_real = reals[-1]
        z = self.sample_latents(x_real.shape[0])
        power_iteration(D)
        with self.autocast():
            # G's forward stays outside the compiled critic objective: a compiled function is one
            # autograd node, and the critic's backward would free what the generator's needs.
            x_fake = G(z)
            d_total, _, stats = self.compiled(critic_objective)(D, self.loss, x_real, x_fake.detach(),
                                                                g.reg, g.reg_weight)
        opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        self.clip_gradients("D")
        opt_d.step()
        # Generator step on the same fakes, through D's stopped weights (no weight gradient of D).
        power_iteration(D)  # D has new weights (a training-mode forward of torch's SN would iterate here)
        with self.autocast():
            g_loss = self.compiled(generator_objective)(D, self.loss, x_fake)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.clip_gradients("G")
        opt_g.step()
        stats["g_loss"] = g_loss.detach()
        return stats
