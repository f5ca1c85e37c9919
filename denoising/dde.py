"""`method: dde`: a generator trained through denoising density estimators (Bigdeli et al. 2020).

Two scalar log-density networks at one noise level σ, each trained by DSM: log p̃ for the data and
log q̃ for the generator's samples (here −E of an energy-parametrised Denoiser). The generator
minimises KL(q̃‖p̃) = E[log q̃(x̃) − log p̃(x̃)], x̃ = G(z) + σε, whose reparametrised gradient is
E[(∇ log q̃ − ∇ log p̃)(x̃) ∂x̃/∂θ]. The three updates share one backward pass, by the same
stop-gradient construction as the one-loss GAN (gan/steps.py):

    L = DSM_p(x) + DSM_q(sg(G(z))) + KL_sg(x̃)

where KL_sg evaluates both densities with their parameters stopped (common/stopgrad.py): the density
networks receive exactly their DSM gradients, G reaches L only through KL_sg(x̃), and the pass
computes no weight gradient of p or q. (The seed's form added [KL(x̃) − KL(sg(x̃))], zero in value
but cancelling the densities' share of ∇KL only up to rounding.) One optimizer with a parameter
group per network steps all three together.
"""
from __future__ import annotations

import torch

from common.method import GeneratorMethod, require_arch_fits_data
from common.registry import lookup, register
from common.schema import require_square
from common.stopgrad import frozen
from networks import DCGANGenerator, MLPGenerator
from networks.dcgan import require_dcgan_size
from . import architectures  # noqa: F401  (registers the density networks' architectures)
from .config import DDEConfig, DDEModelConfig, DDEOptimConfig
from .denoiser import Denoiser
from .losses import dsm_loss


@register("generator_arch", "dcgan")
def dcgan_generator(m: DDEModelConfig, info) -> torch.nn.Module:
    """DCGAN's generator for square images of its sizes."""
    require_square(info)
    require_dcgan_size(info.shape[-1], "generators")
    return DCGANGenerator(m.z_dim, info.shape[-1], info.shape[0], m.g_width)


@register("generator_arch", "mlp", points=True)
def mlp_generator(m: DDEModelConfig, info) -> torch.nn.Module:
    """An MLP for toy 2-D points."""
    return MLPGenerator(m.z_dim, info.shape[0], m.g_width, m.g_depth)


def build_generator(m: DDEModelConfig, info) -> torch.nn.Module:
    """The generator model.g_arch names (`@register("generator_arch", NAME)`, `points=True` for
    toy 2-D data)."""
    return lookup("generator_arch", m.g_arch, "model.g_arch")(m, info)


@register("method", "dde")
class DDE(GeneratorMethod):
    ModelConfig, OptimConfig, Config = DDEModelConfig, DDEOptimConfig, DDEConfig
    networks = ("G", "p", "q")
    ema_networks = ("G",)

    @classmethod
    def needs_double_backward(cls, cfg):
        return True  # both densities are trained through −∇E

    @classmethod
    def check_config(cls, cfg):
        require_arch_fits_data(cfg, "generator_arch", "g_arch")
        require_arch_fits_data(cfg, "denoiser_arch")

    def __init__(self, cfg, info, device, runtime=None):
        super().__init__(cfg, info, device, runtime)
        self.add_network("G", build_generator(cfg.model, info))
        density = lookup("denoiser_arch", cfg.model.arch)
        for name in ("p", "q"):
            self.add_network(name, density(cfg.model, info))
        o = cfg.optim
        self.optimizers = {"all": self.adam({"G": o.lr_g, "p": o.lr_d, "q": o.lr_d})}

    def density(self, name: str) -> Denoiser:
        """The energy-parametrised denoiser of network p (data) or q (generator); log density = −E."""
        return Denoiser(self.training_net(name), "energy", self.cfg.dde.sigma_data)

    def example_inputs(self, name, n):
        if name == "G":
            return super().example_inputs(name, n)
        return (torch.randn(n, *self.info.shape, device=self.device), torch.full((n,), self.cfg.dde.sigma, device=self.device))

    def training_step(self, batch, labels=None):  # unconditional: labels unused
        sigma, opt = self.cfg.dde.sigma, self.optimizers["all"]
        P, Q = self.density("p"), self.density("q")

        def catch_up(part):
            x = part[0]
            with torch.no_grad(), self.autocast():
                fakes = self.training_net("G")(self.sample_latents(x.shape[0]))
            with self.autocast():
                return dsm_loss(Q, fakes, sigma).mean(), {}

        def objective(part):
            with self.autocast():
                return self.objective(part[0], P, Q, sigma)
        for _ in range(self.cfg.dde.q_steps - 1):  # let q̃ catch up with the moving generator
            self.optimizer_step(opt, catch_up, self.micro_batches(batch))
        return self.optimizer_step(opt, objective, self.micro_batches(batch), "G", "p", "q")

    def objective(self, x, P, Q, sigma):
        """L = DSM_p(x) + DSM_q(sg(G(z))) + KL_sg(x̃) and its terms (module docstring)."""
        x_fake = self.training_net("G")(self.sample_latents(x.shape[0]))
        dsm_p = dsm_loss(P, x, sigma).mean()
        dsm_q = dsm_loss(Q, x_fake.detach(), sigma).mean()
        x_noisy = x_fake + sigma * torch.randn_like(x_fake)
        P_sg, Q_sg = (Denoiser(frozen(d.net), "energy", d.sigma_data) for d in (P, Q))
        g_loss = (P_sg.energy(x_noisy, sigma) - Q_sg.energy(x_noisy, sigma)).mean()  # log q̃ − log p̃ + const
        stats = {"dsm_p": dsm_p.detach(), "dsm_q": dsm_q.detach(), "g_loss": g_loss.detach()}
        return dsm_p + dsm_q + g_loss, stats
