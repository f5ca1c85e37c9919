"""`method: gan`: a generator and a critic trained with the one-loss step or the alternating one."""
from __future__ import annotations

import inspect

import torch

from common.method import GeneratorMethod, points_data, require_arch_fits_data
from common.registry import lookup, names, register
from common.schema import require
from networks.spectral import power_iteration
from . import architectures, losses  # noqa: F401  (register the architectures and losses)
from .augment import Augment
from .config import GANConfig, GANModelConfig, GANOptimConfig
from .steps import call, critic_objective, generator_objective


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
    saved_defaults = {"model": {"g_class_input": False}}  # what configs saved before a key meant by it

    @classmethod
    def check_config(cls, cfg):
        require_arch_fits_data(cfg, "gan_arch")
        require(not (cfg.gan.augment and points_data(cfg)),
                f"gan.augment: {', '.join(cfg.gan.augment)} transforms images, and {cfg.data.name} holds 2-D points; "
                f"set gan.augment: []")
        if lookup("gan_reg", cfg.gan.reg).penalty is not None:
            require(not cfg.model.critic_batchnorm,
                    f"gan.reg: {cfg.gan.reg} penalises ∇ₓD(x) per example, but a BatchNorm critic couples "
                    f"the batch (each logit depends on every input); set model.d_batchnorm=false or gan.reg=none")
        if getattr(lookup("gan_step", cfg.gan.step), "fused", False):
            fusable = [n for n in names("gan_loss") if getattr(lookup("gan_loss", n), "fusable", False)]
            require(cfg.gan.loss in fusable,
                    f"gan.step: one_loss_fused is exact only for losses whose critic derivative never "
                    f"vanishes ({', '.join(fusable)}), not {cfg.gan.loss}; use gan.step=one_loss")
            require(not cfg.model.critic_batchnorm,
                    "gan.step: one_loss_fused needs a critic that treats samples independently; "
                    "set model.d_batchnorm=false or use gan.step=one_loss")

    @classmethod
    def needs_double_backward(cls, cfg):
        return lookup("gan_reg", cfg.gan.reg).penalty is not None  # every penalty differentiates ∇ₓD

    def __init__(self, cfg, info, device, runtime=None):
        super().__init__(cfg, info, device, runtime)
        G, D = lookup("gan_arch", cfg.model.arch)(cfg.model, info)
        self.add_network("G", G)
        self.add_network("D", D)
        self.loss = build_loss(cfg.gan)
        self.batches_per_step = cfg.gan.n_critic
        o = cfg.optim
        self.gan_step = lookup("gan_step", cfg.gan.step)
        # DiffAugment: what the critic sees (gan/augment.py); None: the images themselves
        self.augment = Augment(cfg.gan.augment) if cfg.gan.augment else None
        if not getattr(self.gan_step, "alternating", False):
            # TTUR = per-group learning rates in one optimizer, stepped once for both players.
            self.optimizers = {"GD": self.adam({"G": o.lr_g, "D": o.lr_d})}
        else:
            self.optimizers = {"G": self.adam({"G": o.lr_g}), "D": self.adam({"D": o.lr_d})}

    def training_step(self, batch, labels=None):
        reals = batch.chunk(self.batches_per_step)
        if self.num_classes:  # each real batch with its labels; the fakes' classes drawn uniformly
            reals = list(zip(reals, labels.chunk(self.batches_per_step)))
        else:
            reals = [(x, None) for x in reals]
        if getattr(self.gan_step, "alternating", False):
            return self._alternating_step(reals)
        return self._one_loss_step(reals)

    def _labels(self, y_real) -> dict:
        """The step's label arguments: none for an unconditional GAN (module gan/steps.py)."""
        if y_real is None:
            return {}
        return {"y_real": y_real, "y_fake": self.sample_labels(y_real.shape[0])}

    def _critic_only(self, opt, real):
        """A critic update with G frozen (the extra n_critic − 1 steps)."""
        g, G, D = self.cfg.gan, self.training_net("G"), self.training_net("D")
        power_iteration(D)

        def objective(part):
            x, labels = part[0], self._labels(part[1])
            with torch.no_grad(), self.autocast():
                x_fake = call(G, self.sample_latents(x.shape[0]), labels.get("y_fake"))
            with self.autocast():
                d_total, _, stats = self.compiled(critic_objective)(D, self.loss, x, x_fake, g.reg, g.reg_weight,
                                                                    **labels, augment=self.augment)
            return d_total, stats
        return self.optimizer_step(opt, objective, self.micro_batches(*real), "D")

    def _one_loss_step(self, reals):
        g, opt = self.cfg.gan, self.optimizers["GD"]
        for real in reals[:-1]:
            self._critic_only(opt, real)
        G, D = self.training_net("G"), self.training_net("D")
        one_loss = self.compiled(self.gan_step)
        power_iteration(D)  # once: every critic call of the update sees the same σ estimates

        def objective(part):
            x_real, labels = part[0], self._labels(part[1])
            z = self.sample_latents(x_real.shape[0])
            with self.autocast():
                return one_loss(G, D, self.loss, x_real, z, g.reg, g.reg_weight, **labels, augment=self.augment)
        return self.optimizer_step(opt, objective, self.micro_batches(*reals[-1]), "G", "D")

    def _alternating_step(self, reals):
        g, opt_g, opt_d = self.cfg.gan, self.optimizers["G"], self.optimizers["D"]
        for real in reals[:-1]:
            self._critic_only(opt_d, real)
        G, D = self.training_net("G"), self.training_net("D")
        parts = self.micro_batches(*reals[-1])
        # One part: the generator step reuses the critic step's fakes and G's graph. Several: it
        # recomputes each part's fakes from the same latents, so that each part's forward and
        # backward stay together (DDP defers the all-reduce of all but the last part's gradients).
        reuse = len(parts) == 1
        power_iteration(D)
        kept = []

        def critic(part):
            x_real, labels = part[0], self._labels(part[1])
            z = self.sample_latents(x_real.shape[0])
            with self.autocast():
                d_total, stats, x_fake = self.gan_step(G, D, self.loss, x_real, z, g.reg, g.reg_weight,
                                                       critic=self.compiled(critic_objective), keep_graph=reuse,
                                                       **labels, augment=self.augment)
            kept.append((x_fake if reuse else z, labels.get("y_fake")))
            return d_total, stats
        stats = self.optimizer_step(opt_d, critic, parts, "D")
        # Generator step on the same fakes (and classes), through D's stopped weights (no weight
        # gradient of D).
        power_iteration(D)  # D has new weights (a training-mode forward of torch's SN would iterate here)

        def generator(kept_part):
            fakes_or_latents, y_fake = kept_part
            with self.autocast():
                x_fake = fakes_or_latents if reuse else call(G, fakes_or_latents, y_fake)
                g_loss = self.compiled(generator_objective)(D, self.loss, x_fake, y_fake, augment=self.augment)
            return g_loss, {"g_loss": g_loss.detach()}
        return {**stats, **self.optimizer_step(opt_g, generator, kept, "G")}
