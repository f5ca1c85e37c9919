"""`method: dae | ncsn | ebm`: one denoiser, three parametrisations, one loss, every sampler.

    dae   D = F(x̃, σ) trained to reconstruct x (its residual is the score), one σ or a ladder
    ncsn  s = F(x̃)/σ (or EDM's preconditioned score), σ²-weighted DSM over NCSN's geometric ladder
          (Song & Ermon 2019, 2020)
    ebm   s = −∇ₓE(x̃; σ), the same annealed DSM through double backprop (Li, Chen & Sommer 2019)

Samples: any registered sampler, e.g. annealed Langevin dynamics (NCSN) or Heun's method on the
probability-flow ODE (EDM) (denoising/samplers.py); a class-conditional net's with classifier-free
guidance, and any model's inpainting of known pixels (denoising/guidance.py).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from common.errors import ConfigError
from common.method import Method, require_arch_fits_data
from common.registry import lookup, register
from common.schema import require
from data.base import to_unit_range
from networks.unet import SelfAttention
from . import architectures  # noqa: F401  (registers the architectures)
from .config import (DAEConfig, DenoiserModelConfig, DenoiserOptimConfig, EBMConfig, NCSNConfig, NoiseConfig,
                     upgrade_noise_section)
from .denoiser import Denoiser
from .guidance import AutoGuided, Guided, Inpainting, evaluations, weight_at
from .losses import dsm_loss, dsm_objective
from .samplers import Schedule, evaluation_sigmas
from .schedule import geometric_sigmas, langevin_step_size, max_pairwise_distance, ncsnv2_num_scales


PROBE_BANDS = 5  # noise bands of the held-out DSM curves (DenoisingMethod.probe)


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
    confined_energy = False  # an energy model's far field (denoising/config.py, EBMConfig.energy)
    ModelConfig, OptimConfig, Config = DenoiserModelConfig, DenoiserOptimConfig, NoiseConfig
    networks = ("net",)
    ema_networks = ("net",)
    resume_may_change = ("{method}.sampler*", "{method}.guidance", "{method}.inpaint_guidance",
                         "{method}.autoguide*")  # how samples are drawn
    fixed_by_training = ("{method}.sigma_data", "{method}.preconditioning")  # how D is read from F
    saved_defaults = {"model": {"adaptive_norm": False}}  # what configs saved before a key meant by it

    @classmethod
    def upgrade_config(cls, raw):
        name = raw.get("method")
        return {**raw, name: upgrade_noise_section(raw[name])} if name in raw else raw

    @classmethod
    def check_config(cls, cfg):
        require_arch_fits_data(cfg, "denoiser_arch")
        key = f"{cfg.method}.guidance"
        require(cfg.model.num_classes or getattr(cfg, cfg.method).guidance == 1.0,
                f"{key}: classifier-free guidance needs a class-conditional net (model.num_classes=0 here); guide "
                f"an unconditional one with {cfg.method}.autoguide=PATH {cfg.method}.autoguide_weight=W, or drop {key}")

    @classmethod
    def resolve_config(cls, cfg, dataset):
        """NCSNv2's techniques fill σ_max (1), the number of levels (2) and, for annealed Langevin,
        its step ε (4)."""
        n, dim = getattr(cfg, cfg.method), data_dim(dataset)
        sigma_max = n.sigma_max
        if sigma_max is None:
            sigma_max = round(max_pairwise_distance(data_sample(dataset)), 3)
        num_scales = n.num_scales or ncsnv2_num_scales(sigma_max, n.sigma_min, dim)
        sampler = n.sampler
        if getattr(sampler, "step_lr", 0) is None:  # a Langevin sampler's ε
            ladder = geometric_sigmas(sigma_max, n.sigma_min, num_scales)
            sampler = dataclasses.replace(sampler, step_lr=langevin_step_size(ladder, sampler.steps, dim))
        section = dataclasses.replace(n, sigma_max=sigma_max, num_scales=num_scales, sampler=sampler)
        return dataclasses.replace(cfg, **{cfg.method: section})

    def __init__(self, cfg, info, device, runtime=None):
        super().__init__(cfg, info, device, runtime)
        n = self.noise
        require(n.sigma_max is not None and n.num_scales is not None,
                f"{cfg.method}: sigma_max and num_scales must be resolved before building")
        self.add_network("net", lookup("denoiser_arch", cfg.model.arch)(cfg.model, info))
        if self.needs_double_backward(cfg):  # the loss differentiates the net's input gradient
            for layer in self.nets["net"].modules():
                if isinstance(layer, SelfAttention):
                    layer.double_backward = True
        self.null_class = cfg.model.num_classes  # the label embedding's "no label" index
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
            cache[id(net)] = Denoiser(net, self.output_parametrization, self.noise.sigma_data,
                                      self.cfg.model.input_scaling, confined=self.confined_energy)
        return cache[id(net)]

    @property
    def output_parametrization(self) -> str:
        """How the net's output becomes D or s (denoising/denoiser.py): the method's own, or for NCSN
        with ncsn.preconditioning=edm the DAE's, whose score is EDM's preconditioned one."""
        return self.parametrization

    def draw_sigmas(self, n: int) -> torch.Tensor:
        """Training noise levels from the config's sigma_sampling (a single level: that level)."""
        kind = "discrete" if len(self.sigmas) == 1 else self.noise.sigma_sampling
        return lookup("sigma_sampling", kind)(n, self.sigmas, self.noise, self.device)

    def drop_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """A class-conditional net's training labels, each replaced by the null class with
        probability label_dropout (classifier-free guidance's joint training); None if unconditional."""
        if not self.num_classes or labels is None:
            return None
        drop = torch.rand(labels.shape, device=labels.device) < self.noise.label_dropout
        return torch.where(drop, torch.full_like(labels, self.null_class), labels)

    def training_step(self, batch, labels=None):
        def objective(part):
            x, y = part
            with self.autocast():
                loss = self.compiled(dsm_objective)(self.denoiser(train=True), x, self.draw_sigmas(x.shape[0]),
                                                    self.noise.weighting, self.drop_labels(y))
            return loss, {"dsm": loss.detach()}
        return self.optimizer_step(self.optimizers["net"], objective, self.micro_batches(batch, labels), "net")

    @torch.no_grad()
    def probe(self, batches: dict[str, torch.Tensor], bands: int = PROBE_BANDS) -> dict[str, float]:
        """The DSM loss (the config's weighting) of the trained network, not its average, by noise
        level: `bands` log-spaced bands of [σ_min, σ_max], each at its geometric centre, on fixed
        images (`batches`: e.g. {"train": ..., "test": ...}) with fixed noise, the same at every
        call, so the curves show which levels are learnt and where the test loss parts from the
        training loss. Draws from its own generator: the run is unchanged by it."""
        n, D = self.noise, self.denoiser(ema=False)
        edges = torch.logspace(math.log10(n.sigma_min), math.log10(n.sigma_max), bands + 1).tolist()
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 3)
        was_training = D.net.training
        D.net.eval()
        out = {}
        try:
            for split, x in batches.items():
                x = x.to(self.device)
                eps = torch.randn(x.shape, generator=gen, device=self.device, dtype=x.dtype)
                for lo, hi in zip(edges[:-1], edges[1:]):
                    sigma = torch.full((x.shape[0],), math.sqrt(lo * hi), device=self.device, dtype=x.dtype)
                    loss = dsm_loss(D, x, sigma, n.weighting, eps=eps, create_graph=False).mean()
                    out[f"dsm_{split}/sigma_{lo:.3g}-{hi:.3g}"] = loss.item()
        finally:
            D.net.train(was_training)
        return out

    def example_inputs(self, name, n):
        x = torch.randn(n, *self.info.shape, device=self.device)
        return (x, self.sigmas[0].expand(n))

    def sample_latents(self, n, generator=None):
        return torch.randn(n, *self.info.shape, device=self.device, generator=generator)

    def schedule(self) -> Schedule:
        """What every sampler is told of this model (Schedule.of)."""
        return Schedule.of(self.sigmas, self.noise.sigma_sampling, self.cfg.model.conditional,
                           self.cfg.train.cuda_graph)

    def require_used(self, keys):
        """A sampler setting the sampler ignores for this model (its `unused(schedule)`: e.g. `steps`
        of an ODE sampler for a net that steps on its own ladder), or a guidance setting with nothing
        to act on (an autoguidance weight with no guide, an interval for a model with no guidance;
        check_config refuses a classifier-free weight for an unconditional net), is refused, naming it."""
        settings, prefix, name = self.noise.sampler, f"{self.name}.sampler.", self.name
        unused = set(settings.unused(self.schedule()))
        idle = {}  # key → why it has nothing to act on
        if self.guide is None:
            idle[f"{name}.autoguide_weight"] = f"there is no guide to weight: name one with {name}.autoguide=PATH"
            if not self.num_classes:
                idle[f"{name}.guidance_interval"] = (f"this model has no guidance to limit (unconditional, and no "
                                                     f"{name}.autoguide): name a guide with {name}.autoguide=PATH")
        for key in keys:
            if key in idle:
                raise ConfigError(f"{key}: {idle[key]}, or drop {key}")
            if key.startswith(prefix) and key[len(prefix):] in unused:
                raise ConfigError(f"{key}: not used by this network: it was trained on discrete levels "
                                  f"({self.name}.sigma_sampling={self.noise.sigma_sampling}), so {settings.name} "
                                  f"steps on its own {len(self.sigmas)}-level ladder; drop {key}")

    def guided(self, D: Denoiser, labels: torch.Tensor | None) -> torch.nn.Module:
        """D for a sampler: a class-conditional net's, at `labels` with the config's guidance weight."""
        if not self.num_classes:
            return D
        return Guided(D, labels, self.noise.guidance, self.null_class, self.noise.guidance_interval)

    def passes_per_evaluation(self, sigma: float) -> int:
        """Network passes per denoiser evaluation at level σ: 2 for a guided class-conditional net
        (w ∉ {0, 1}), and 2 for an autoguided net (w ∉ {0, 1}; the guide's pass counted as one of the
        net's); outside <method>.guidance_interval w is 1: one pass."""
        interval = self.noise.guidance_interval
        cfg_passes = evaluations(weight_at(self.noise.guidance, interval, sigma)) if self.num_classes else 1
        ag_passes = evaluations(weight_at(self.noise.autoguide_weight, interval, sigma)) if self.guide else 1
        return cfg_passes * ag_passes

    def evaluations_per_sample(self) -> int:
        """The passes of the sampler's evaluations of D (an energy model's: a forward and a backward pass
        each) on this model's schedule, each at its level: a net trained on the discrete ladder steps
        on all its levels whatever the sampler's `steps` (Schedule.levels)."""
        settings = self.noise.sampler
        sigmas = evaluation_sigmas(lookup("sampler", settings.name), settings, self.schedule(), self.info.shape)
        return sum(self.passes_per_evaluation(s) for s in sigmas)

    guide = None  # the autoguidance guide (set_guide), sampled with its EMA weights

    def set_guide(self, guide: "DenoisingMethod"):
        """The weaker model that autoguides this one's samples (<method>.autoguide; engine/build.py
        loads it): a denoising model of the same data shape whose noise levels cover this one's."""
        path = f"{self.name}.autoguide"
        if not isinstance(guide, DenoisingMethod):
            raise ConfigError(f"{path}: the guide is a {guide.name} checkpoint; it must be a denoising model "
                              f"(dae, ncsn or ebm) of the same data")
        if tuple(guide.info.shape) != tuple(self.info.shape):
            raise ConfigError(f"{path}: the guide's images are {tuple(guide.info.shape)}, this model's "
                              f"{tuple(self.info.shape)}: train the guide on the same data")
        if guide.num_classes != self.num_classes:
            def kind(n):
                return f"{n}-class" if n else "unconditional"
            raise ConfigError(f"{path}: the guide is {kind(guide.num_classes)}, this model {kind(self.num_classes)}: "
                              f"train the guide with model.num_classes={self.num_classes}")
        lo, hi = float(self.sigmas[-1]), float(self.sigmas[0])
        if float(guide.sigmas[-1]) > lo * 1.001 or float(guide.sigmas[0]) < hi * 0.999:
            raise ConfigError(f"{path}: the guide was trained on σ in [{float(guide.sigmas[-1]):.4g}, "
                              f"{float(guide.sigmas[0]):.4g}], which does not cover this model's "
                              f"[{lo:.4g}, {hi:.4g}]: train it with the same sigma_min and sigma_max")
        self.guide = guide

    def autoguided(self, fn, labels: torch.Tensor | None = None):
        """fn (the model's denoiser for a sampler, at classes `labels`) autoguided by the guide, when
        there is one. A class-conditional model's guide is conditional too, at the same classes and
        classifier-free guidance weight (Karras et al. 2024 guide EDM2's conditional nets with a
        conditional guide)."""
        if self.guide is None:
            return fn
        guide = self.guided(self.guide.denoiser(ema=True), labels)  # set_guide: the same classes, null class
        return AutoGuided(fn, guide, self.noise.autoguide_weight, self.noise.guidance_interval)

    @property
    def sampling_precision(self) -> str:
        return self.runtime.precision  # sample() runs the net under the runtime's autocast

    @torch.no_grad()
    def sample(self, n, generator=None, ema=True, latents=None, progress=False, labels=None,
               inpaint: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Samples from σ_max·z with the sampler the config names; `progress` shows a bar over the
        sampler's levels. A class-conditional net's are of classes `labels` (uniform when not
        given), guided with weight <method>.guidance. `inpaint` = (images in [−1, 1], mask of their
        known pixels) completes those images instead: n of them, the known pixels as given. The net
        runs in the run's precision (bf16 autocast for a bf16 run; `precision=fp32` overrides it), the
        sampler's arithmetic in fp32."""
        settings = self.noise.sampler
        sampler, schedule = lookup("sampler", settings.name), self.schedule()
        # inpainting's noise is drawn anew when σ changes, and guidance in an interval branches on σ:
        # neither is a fixed step to capture
        if inpaint is not None or self.noise.guidance_interval is not None:
            schedule = dataclasses.replace(schedule, cuda_graph=False)
        z = self.sample_latents(n, generator) if latents is None else latents.to(self.device)
        labels = self.conditional_labels(labels, len(z), generator)
        D = self.denoiser(ema)
        was_training = D.net.training
        D.net.eval()
        try:
            out, start = [], 0
            for chunk in z.split(1000):
                rows = slice(start, start + len(chunk))
                start += len(chunk)
                at = labels[rows] if labels is not None else None
                fn = self.autoguided(self.guided(D, at), at)
                if inpaint is not None:
                    fn = Inpainting(fn, inpaint[0][rows].to(self.device), inpaint[1][rows].to(self.device), generator,
                                    self.noise.inpaint_guidance)
                with self.autocast():  # the net in the run's precision; the sampler's arithmetic in fp32
                    x = sampler(fn, chunk * self.sigmas[0], settings, schedule, generator, progress)
                out.append(fn.complete(x) if inpaint is not None else x)
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
    Config = NCSNConfig

    @property
    def output_parametrization(self) -> str:
        return "direct" if self.noise.preconditioning == "edm" else self.parametrization


@register("method", "ebm")
class EBM(DenoisingMethod):
    parametrization = "energy"
    Config = EBMConfig
    fixed_by_training = (*DenoisingMethod.fixed_by_training, "ebm.energy")
    saved_defaults = {**DenoisingMethod.saved_defaults, "ebm": {"energy": "denoiser"}}

    @property
    def confined_energy(self) -> bool:
        return self.noise.energy == "confined"

    @classmethod
    def needs_double_backward(cls, cfg):
        return True
