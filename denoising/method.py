"""`method: dae | ncsn | ebm`: one denoiser, three parametrisations, one loss, two samplers.

    dae   D = F(x̃, σ) trained to reconstruct x (its residual is the score), one σ or a ladder
    ncsn  s = F(x̃)/σ, σ²-weighted DSM over NCSN's geometric ladder (Song & Ermon 2019, 2020)
    ebm   s = −∇ₓE(x̃; σ), the same annealed DSM through double backprop (Li, Chen & Sommer 2019)

Samples: annealed Langevin dynamics (NCSN) or Heun's method on the probability-flow ODE (EDM).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from common.config import require
from common.method import Method, require_arch_fits_data
from common.registry import register_method
from data.base import to_unit_range
from .config import DAEConfig, DenoiserModelConfig, DenoiserOptimConfig, NoiseConfig
from .denoiser import Denoiser
from .losses import dsm_objective
from networks import MLP, NCSNv2, UNet
from .samplers import annealed_langevin, heun
from .schedule import (edm_sigmas, geometric_sigmas, max_pairwise_distance, ncsnv2_num_scales,
                       ncsnv2_ratio, ncsnv2_step_size)


def build_network(m: DenoiserModelConfig, shape) -> torch.nn.Module:
    if m.arch == "mlp":
        return MLP(shape[0], m.width, m.depth, m.conditional)
    if m.arch == "ncsnv2":
        return NCSNv2(shape[0], m.width, shape[-1])
    return UNet(shape[0], m.width, tuple(m.mults), m.blocks, m.conditional, m.patch)


def data_dim(dataset) -> int:
    return math.prod(dataset.info.shape)


def data_sample(dataset, n: int = 5000, seed: int = 0) -> torch.Tensor:
    """Up to n random examples (fixed by the seed) as floats in [−1, 1], from any data set."""
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    if hasattr(dataset, "data"):  # in memory
        return to_unit_range(dataset.data[idx])
    return to_unit_range(torch.stack([torch.as_tensor(dataset[i][0]) for i in idx.tolist()]))


class DenoisingMethod(Method):
    parametrization = "score"
    ModelConfig, OptimConfig, Config = DenoiserModelConfig, DenoiserOptimConfig, NoiseConfig
    networks = ("net",)
    ema_networks = ("net",)

    @classmethod
    def check_config(cls, cfg):
        require_arch_fits_data(cfg, arch=(cfg.model.arch, "unet/ncsnv2"))

    @classmethod
    def resolve_config(cls, cfg, dataset):
        """NCSNv2's techniques fill σ_max (1), the number of levels (2) and the Langevin step (4)."""
        n, dim = cfg.section, data_dim(dataset)
        sigma_max = n.sigma_max
        if sigma_max is None:
            sigma_max = round(max_pairwise_distance(data_sample(dataset)), 3)
        num_scales = n.num_scales or ncsnv2_num_scales(sigma_max, n.sigma_min, dim)
        step_lr = n.step_lr
        if step_lr is None:  # γ of the actual ladder (technique 2's when there is a single level)
            gamma = (sigma_max / n.sigma_min) ** (1 / (num_scales - 1)) if num_scales > 1 else ncsnv2_ratio(dim)
            step_lr = float(f"{ncsnv2_step_size(n.sigma_min, gamma, n.langevin_steps):.4g}")
        section = dataclasses.replace(n, sigma_max=sigma_max, num_scales=num_scales, step_lr=step_lr)
        return dataclasses.replace(cfg, section=section)

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        n = cfg.section
        require(n.sigma_max is not None and n.num_scales is not None and n.step_lr is not None,
                f"{cfg.method}: sigma_max, num_scales and step_lr must be resolved before building")
        self.add_network("net", build_network(cfg.model, info.shape))
        self.sigmas = geometric_sigmas(n.sigma_max, n.sigma_min, n.num_scales).to(self.device, torch.float32)
        self.optimizers = {"net": self.adam({"net": cfg.optim.lr})}

    def denoiser(self, ema: bool = False, train: bool = False) -> Denoiser:
        """The denoiser around the EMA network (`ema`), the DDP-wrapped one (`train`) or the raw one.
        The same object while its network is (a compiled objective is specialised to it)."""
        m, n = self.cfg.model, self.cfg.section
        net = self.module("net") if train else self.net("net", ema)
        cache = self.__dict__.setdefault("_denoisers", {})
        if cache.get(id(net)) is None or cache[id(net)].net is not net:
            cache[id(net)] = Denoiser(net, self.parametrization, n.sigma_data, m.input_scaling)
        return cache[id(net)]

    def draw_sigmas(self, n: int) -> torch.Tensor:
        """Training noise levels: the ladder's (discrete), log-uniform over it, or EDM's log-normal."""
        cfg = self.cfg.section
        if cfg.sigma_sampling == "discrete" or len(self.sigmas) == 1:
            return self.sigmas[torch.randint(len(self.sigmas), (n,), device=self.device)]
        if cfg.sigma_sampling == "log_normal":
            return (cfg.p_mean + cfg.p_std * torch.randn(n, device=self.device)).exp()
        lo, hi = self.sigmas[-1].log(), self.sigmas[0].log()
        return (lo + (hi - lo) * torch.rand(n, device=self.device)).exp()

    def training_step(self, batch):
        opt = self.optimizers["net"]
        with self.autocast():
            loss = self.compiled(dsm_objective)(self.denoiser(train=True), batch, self.draw_sigmas(batch.shape[0]),
                                                self.cfg.section.weighting)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.clip_gradients("net")
        opt.step()
        return {"dsm": loss.detach()}

    def example_inputs(self, name, n):
        x = torch.randn(n, *self.info.shape, device=self.device)
        return (x, self.sigmas[0].expand(n))

    def sample_latents(self, n, generator=None):
        return torch.randn(n, *self.info.shape, device=self.device, generator=generator)

    def heun_sigmas(self) -> torch.Tensor:
        """Heun's time steps, from σ_max down to a final 0. A σ-conditional network trained on the
        discrete ladder has seen those levels only, and between them its output is arbitrary (on the
        8-Gaussians toy: cosine 0.1 with the exact score at σ = 0.07, between levels 0.05 and 0.09),
        so it steps on its own ladder (2L − 1 evaluations). A network trained on continuous σ, or
        NCSNv2's unconditional one (s = F(x)/σ), takes EDM's `heun_steps` ρ-spaced levels."""
        n = self.cfg.section
        if n.sigma_sampling == "discrete" and self.cfg.model.conditional:
            return torch.cat([self.sigmas.cpu(), self.sigmas.new_zeros(1, device="cpu")])
        return edm_sigmas(n.heun_steps, n.sigma_min, n.sigma_max, n.rho)

    @torch.no_grad()
    def sample(self, n, generator=None, ema=True, latents=None, progress=False):
        """Samples from σ_max·z with the config's sampler (langevin or heun); `progress` shows a
        bar over the sampler's levels."""
        cfg = self.cfg.section
        z = self.sample_latents(n, generator) if latents is None else latents.to(self.device)
        D = self.denoiser(ema)
        was_training = D.net.training
        D.net.eval()
        try:
            out = []
            for chunk in z.split(1000):
                x = chunk * self.sigmas[0]
                if cfg.sampler == "heun":
                    out.append(heun(D, x, self.heun_sigmas(), progress))
                else:
                    out.append(annealed_langevin(D.score, x, self.sigmas, cfg.langevin_steps, cfg.step_lr,
                                                 cfg.final_denoise, generator, self.cfg.train.cuda_graph,
                                                 progress))
            return torch.cat(out).float()
        finally:
            D.net.train(was_training)


@register_method("dae")
class DAE(DenoisingMethod):
    parametrization = "direct"
    Config = DAEConfig


@register_method("ncsn")
class NCSN(DenoisingMethod):
    parametrization = "score"


@register_method("ebm")
class EBM(DenoisingMethod):
    parametrization = "energy"

    @classmethod
    def needs_double_backward(cls, cfg):
        return True
