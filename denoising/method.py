"""`method: dae | ncsn | ebm`: one denoiser, three parametrisations, one loss, every sampler.

    dae   D = F(x̃, σ) trained to reconstruct x (its residual is the score), one σ or a ladder
    ncsn  s = F(x̃)/σ, σ²-weighted DSM over NCSN's geometric ladder (Song & Ermon 2019, 2020)
    ebm   s = −∇ₓE(x̃; σ), the same annealed DSM through double backprop (Li, Chen & Sommer 2019)

Samples: any registered sampler, e.g. annealed Langevin dynamics (NCSN) or Heun's method on the
probability-flow ODE (EDM) (denoising/samplers.py).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from common.method import Method, require_arch_fits_data
from common.registry import lookup, register
from common.schema import require
from data.base import to_unit_range
from . import architectures  # noqa: F401  (registers the architectures)
from .config import DAEConfig, DenoiserModelConfig, DenoiserOptimConfig, NoiseConfig
from .denoiser import Denoiser
from .losses import dsm_objective
from .samplers import SamplerSettings, heun_sigmas
from .schedule import geometric_sigmas, max_pairwise_distance, ncsnv2_num_scales, ncsnv2_ratio, ncsnv2_step_size


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
    # How samples are drawn: grids change, training does not.
    resume_may_change = ("{method}.sampler", "{method}.langevin_steps", "{method}.step_lr", "{method}.final_denoise",
                         "{method}.heun_steps", "{method}.rho")

    @classmethod
    def check_config(cls, cfg):
        require_arch_fits_data(cfg, "denoiser_arch")

    @classmethod
    def resolve_config(cls, cfg, dataset):
        """NCSNv2's techniques fill σ_max (1), the number of levels (2) and the Langevin step (4)."""
        n, dim = getattr(cfg, cfg.method), data_dim(dataset)
        sigma_max = n.sigma_max
        if sigma_max is None:
            sigma_max = round(max_pairwise_distance(data_sample(dataset)), 3)
        num_scales = n.num_scales or ncsnv2_num_scales(sigma_max, n.sigma_min, dim)
        step_lr = n.step_lr
        if step_lr is None:  # γ of the actual ladder (technique 2's when there is a single level)
            gamma = (sigma_max / n.sigma_min) ** (1 / (num_scales - 1)) if num_scales > 1 else ncsnv2_ratio(dim)
            step_lr = float(f"{ncsnv2_step_size(n.sigma_min, gamma, n.langevin_steps):.4g}")
        section = dataclasses.replace(n, sigma_max=sigma_max, num_scales=num_scales, step_lr=step_lr)
        return dataclasses.replace(cfg, **{cfg.method: section})

    def __init__(self, cfg, info, device):
        super().__init__(cfg, info, device)
        n = self.noise
        require(n.sigma_max is not None and n.num_scales is not None and n.step_lr is not None,
                f"{cfg.method}: sigma_max, num_scales and step_lr must be resolved before building")
        self.add_network("net", lookup("denoiser_arch", cfg.model.arch)(cfg.model, info))
        self.sigmas = geometric_sigmas(n.sigma_max, n.sigma_min, n.num_scales).to(self.device, torch.float32)
        self.optimizers = {"net": self.adam({"net": cfg.optim.lr})}

    @property
    def noise(self) -> NoiseConfig:
        """The method's own section (dae:, ncsn: or ebm:): σ ladder, training σ, weighting, sampler."""
        return getattr(self.cfg, self.name)

    def denoiser(self, ema: bool = False, train: bool = False) -> Denoiser:
        """The denoiser around the network to train through (`train`), else the one to sample
        with (the EMA copy with `ema`). The same object while its network is (a compiled
        objective is specialised to it)."""
        net = self.training_net("net") if train else self.sampling_net("net", ema)
        cache = self.__dict__.setdefault("_denoisers", {})
        if cache.get(id(net)) is None or cache[id(net)].net is not net:
            cache[id(net)] = Denoiser(net, self.parametrization, self.noise.sigma_data, self.cfg.model.input_scaling)
        return cache[id(net)]

    def draw_sigmas(self, n: int) -> torch.Tensor:
        """Training noise levels from the config's sigma_sampling (a single level: that level)."""
        kind = "discrete" if len(self.sigmas) == 1 else self.noise.sigma_sampling
        return lookup("sigma_sampling", kind)(n, self.sigmas, self.noise, self.device)

    def training_step(self, batch):
        opt = self.optimizers["net"]
        with self.autocast():
            loss = self.compiled(dsm_objective)(self.denoiser(train=True), batch, self.draw_sigmas(batch.shape[0]),
                                                self.noise.weighting)
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

    def sampler_settings(self) -> SamplerSettings:
        return SamplerSettings(self.noise, self.sigmas, self.cfg.model.conditional, self.cfg.train.cuda_graph)

    def heun_sigmas(self) -> torch.Tensor:
        """The levels the heun sampler steps on (denoising/samplers.py heun_sigmas)."""
        return heun_sigmas(self.sampler_settings())

    @torch.no_grad()
    def sample(self, n, generator=None, ema=True, latents=None, progress=False):
        """Samples from σ_max·z with the sampler the config names; `progress` shows a bar over the
        sampler's levels."""
        sampler, settings = lookup("sampler", self.noise.sampler), self.sampler_settings()
        z = self.sample_latents(n, generator) if latents is None else latents.to(self.device)
        D = self.denoiser(ema)
        was_training = D.net.training
        D.net.eval()
        try:
            out = [sampler(D, chunk * self.sigmas[0], settings, generator, progress) for chunk in z.split(1000)]
            return torch.cat(out).float()
        finally:
            D.net.train(was_training)


@register("method", "dae")
class DAE(DenoisingMethod):
    parametrization = "direct"
    Config = DAEConfig


@register("method", "ncsn")
class NCSN(DenoisingMethod):
    parametrization = "score"


@register("method", "ebm")
class EBM(DenoisingMethod):
    parametrization = "energy"

    @classmethod
    def needs_double_backward(cls, cfg):
        return True
