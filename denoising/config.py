"""Config sections of the denoising methods: model:, optim: and dae: / ncsn: / ebm: / dde:."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from common.config import OptimConfig
from common.errors import ConfigError
from common.registry import lookup, names
from common.schema import Chosen, choice_of, one_of, require, require_positive
from .samplers import SamplerSettings


@dataclass
class DenoiserModelConfig:
    arch: one_of("denoiser_arch") = "unet"   # denoising/architectures.py
    width: int = 64                          # U-Net base channels / NCSNv2 ngf / MLP width
    mults: list[int] = (1, 2, 2)             # U-Net channel multiplier per resolution
    blocks: int = 2                          # U-Net residual blocks per resolution
    patch: int = 1                           # U-Net: fold patch×patch pixels into channels first
    depth: int = 3                           # MLP hidden layers
    sigma_conditional: Optional[bool] = None  # null: the architecture's default (NCSNv2 no, others yes)
    scale_input: Optional[bool] = None       # EDM's c_in; null: the architecture's default (NCSNv2 no)
    # class-conditional net trained on the data's labels (a class embedding added to the σ embedding;
    # labels dropped to a null class at the method's label_dropout rate): the data set's number of
    # classes (10 for Fashion-MNIST and CIFAR-10); 0 = unconditional
    num_classes: int = 0
    # U-Net: the σ (and class) embedding scales and shifts each block's normalised features (ADM, EDM);
    # false: added before the GroupNorm, which erases it below 64 channels (checkpoints written before)
    adaptive_norm: bool = True
    # U-Net: self-attention after every block at these feature-map resolutions (pixels a side, after
    # patch folding; e.g. [16] at 32 px, as DDPM and EDM on CIFAR-10), and dropout before each block's
    # second convolution while training (DDPM 0.1, EDM 0.13 on CIFAR-10)
    attention: list[int] = ()
    dropout: float = 0.0
    # U-Net: the fewest channels in a GroupNorm group (EDM: 4); 1 gives gcd(32, c) groups, one channel
    # each below 32 channels (an instance norm: what checkpoints written before were trained with)
    group_channels: int = 1

    def check(self, path):
        require(all(r > 0 for r in self.attention), f"{path}.attention: positive resolutions (pixels a side)")
        require(not self.attention or getattr(lookup("denoiser_arch", self.arch), "attention", False),
                f"{path}.attention: the {self.arch} network has no attention layers; use arch: unet or attention: []")
        require(0 <= self.dropout < 1, f"{path}.dropout: a probability in [0, 1), got {self.dropout}")
        require(self.num_classes >= 0, f"{path}.num_classes: must be >= 0 (0 = unconditional), got {self.num_classes}")
        with_classes = [n for n in names("denoiser_arch") if getattr(lookup("denoiser_arch", n), "classes", False)]
        require(not self.num_classes or self.arch in with_classes,
                f"{path}.num_classes: the {self.arch} network cannot be class-conditional; use arch: "
                f"{'/'.join(with_classes)} or num_classes: 0")
        require(not self.num_classes or self.conditional,
                f"{path}.num_classes: the class embedding joins the σ embedding; drop sigma_conditional: false")
        for key in ("width", "blocks", "depth", "patch", "group_channels"):
            require(getattr(self, key) > 0, f"{path}.{key}: must be positive")
        require(len(self.mults) > 0 and all(m > 0 for m in self.mults), f"{path}.mults: positive integers")
        require(not (self.sigma_conditional and not lookup("denoiser_arch", self.arch).conditional),
                f"{path}.sigma_conditional: {self.arch} is unconditional (its output is scaled by 1/σ)")

    @property
    def conditional(self) -> bool:
        default = lookup("denoiser_arch", self.arch).conditional
        return default if self.sigma_conditional is None else self.sigma_conditional

    @property
    def input_scaling(self) -> bool:
        return lookup("denoiser_arch", self.arch).scale_input if self.scale_input is None else self.scale_input


@dataclass
class DenoiserOptimConfig(OptimConfig):
    lr: float = 1e-4


@dataclass
class NoiseConfig:
    """Noise levels, loss weighting and sampler of a denoising model (the dae:/ncsn:/ebm: section)."""
    sigma_min: float = 0.01
    sigma_max: Optional[float] = None         # null: largest pairwise distance in the data (NCSNv2 technique 1)
    num_scales: Optional[int] = None          # null: from NCSNv2 technique 2 (1: a single-σ model)
    # training σ: the ladder's levels (NCSN), log-uniform over [σ_min, σ_max], or EDM's log-normal
    sigma_sampling: one_of("sigma_sampling") = "discrete"   # denoising/schedule.py
    p_mean: float = -1.2                      # log_normal: ln σ ~ N(p_mean, p_std²) (EDM's CIFAR-10 values)
    p_std: float = 1.2
    sigma_data: float = 0.5                   # data std for EDM's input scaling
    weighting: one_of("dsm_weighting") = "score"   # denoising/losses.py: score | reconstruction | edm
    # class-conditional nets (model.num_classes > 0): the rate at which training drops a label to the
    # null class, so one net is conditional and unconditional (Ho & Salimans 2022 use 0.1-0.2), and
    # the classifier-free guidance weight w of samples, D_w = D(x; σ) + w·(D(x; σ, c) − D(x; σ)):
    # 0 unconditional, 1 conditional, > 1 guided
    label_dropout: float = 0.1
    guidance: float = 1.0
    # inpainting (sample.py/evaluate.py --inpaint): the weight of reconstruction guidance, which pulls
    # the denoised estimate of the missing pixels toward agreement with the known ones through the
    # net's Jacobian (ΠGDM's step, denoising/guidance.py); 0 = replacement of the known pixels only
    inpaint_guidance: float = 1.0
    # autoguidance (Karras et al. 2024): the checkpoint of a weaker model of the same data and method
    # (e.g. this config with half the width, trained a quarter of the time) that guides the samples,
    # D_w = D_g + w·(D − D_g) with w = autoguide_weight (denoising/guidance.py); null: off
    autoguide: Optional[str] = None
    autoguide_weight: float = 2.0
    # both guidances only at the levels σ_lo < σ ≤ σ_hi, w = 1 elsewhere (Kynkäänniemi et al. 2024 limit
    # EDM2's to [0.28, 5.42]; denoising/guidance.py), e.g. [0.28, 5.42]; null: at every level
    guidance_interval: Optional[tuple[float, float]] = None
    # The sampler and its own settings (denoising/samplers.py), e.g. {name: edm, steps: 18, churn: 10};
    # the name alone takes its defaults.
    sampler: choice_of("sampler", SamplerSettings) = field(
        default_factory=lambda: Chosen("sampler", SamplerSettings).parse("langevin", "sampler"))

    def check(self, path):
        require(self.sigma_min > 0, f"{path}.sigma_min: must be positive")
        require(self.sigma_max is None or self.sigma_max > self.sigma_min,
                f"{path}.sigma_max: must exceed sigma_min")
        require(self.num_scales is None or self.num_scales >= 1, f"{path}.num_scales: must be >= 1")
        if self.num_scales == 1 and getattr(lookup("sampler", self.sampler.name), "needs_range", False):
            single = [n for n in names("sampler") if not getattr(lookup("sampler", n), "needs_range", False)]
            raise ConfigError(f"{path}.sampler: {self.sampler.name} needs a range of noise levels; use num_scales "
                              f"> 1 or sampler: {single[0]}")
        require_positive(self, path, "p_std", "sigma_data")
        require(0 <= self.label_dropout <= 1, f"{path}.label_dropout: a probability in [0, 1], got {self.label_dropout}")
        require(self.guidance >= 0, f"{path}.guidance: must be >= 0 (0 unconditional, 1 conditional), "
                                    f"got {self.guidance}")
        require(self.inpaint_guidance >= 0,  # finite: every float setting is (common/schema.py)
                f"{path}.inpaint_guidance: a finite weight >= 0 (0 = replacement only), got {self.inpaint_guidance}")
        require(self.autoguide_weight >= 0, f"{path}.autoguide_weight: must be >= 0 (0 the guide, 1 the model "
                                            f"alone), got {self.autoguide_weight}")
        if self.guidance_interval is not None:
            lo, hi = self.guidance_interval
            require(0 <= lo < hi, f"{path}.guidance_interval: [σ_lo, σ_hi] with 0 <= σ_lo < σ_hi, got [{lo}, {hi}]")


@dataclass
class DAEConfig(NoiseConfig):
    # weighting: score, as NCSN. The plain ½‖D − x‖² ("reconstruction") scales level σ by σ² and
    # starves the small levels of a ladder: on the 8-Gaussians toy its score at σ_min had 0.54 of the
    # exact magnitude and its Langevin samples sat 0.31 from the modes (0.97 and 0.18 with "score").
    num_scales: Optional[int] = 10


@dataclass
class NCSNConfig(NoiseConfig):
    # How the network's output F becomes the score:
    #   ncsnv2  s = F/σ (Song & Ermon 2020): D = x + σF carries F's error times σ, up to σ_max (44 on
    #           Fashion-MNIST, 98 on CIFAR-10), so a briefly trained net's samples saturate;
    #   edm     s = (c_skip·x + c_out·F − x)/σ², EDM's preconditioning of the same score (Karras et al.
    #           2022, table 1; the DAE's D): → F/σ − x/σ_d² as σ → 0, bounded D as σ grows.
    # The training objective (annealed DSM, its σ sampling and λ(σ) = σ² weighting) is the same.
    preconditioning: Literal["ncsnv2", "edm"] = "ncsnv2"


@dataclass
class EBMConfig(NoiseConfig):
    # The energy of the denoiser D̂ = c_skip·x + c_out·F (denoising/denoiser.py):
    #   denoiser  ½‖x − D̂‖²/σ² (Salimans & Ho 2021). Away from the data, where F flattens out, its score
    #             is −σ²x/(σ² + σ_d²)²: a pull 545× weaker than the DAE's −x/(σ² + σ_d²) at σ = 0.03,
    #             so the noise a stochastic sampler injects walks unopposed onto plateaus of E;
    #   confined  the same plus ½·c_skip‖x‖²/(σ² + σ_d²) = ½‖x‖²/(σ² + σ_d²) − a learnt scalar: the
    #             energy of the Gaussian N(0, (σ² + σ_d²)I) in the far field, whose score is the DAE's
    #             −x/(σ² + σ_d²) there; with F = 0 it is that Gaussian's exact model, as the DAE is.
    energy: Literal["denoiser", "confined"] = "confined"


@dataclass
class DDEModelConfig:
    g_arch: one_of("generator_arch") = "dcgan"  # denoising/dde.py: dcgan | mlp (toy points) | denoiser
    z_dim: int = 100
    g_sigma: float = 2.5                      # g_arch denoiser: G(z) = D(g_sigma·z; g_sigma) (SiD's σ_init)
    g_width: int = 64
    g_depth: int = 3
    arch: one_of("denoiser_arch") = "unet"   # the two density networks (σ-conditional with dde.sigma_max)
    width: int = 64
    mults: list[int] = (1, 2, 2)
    blocks: int = 2
    depth: int = 3

    def check(self, path):
        require_positive(self, path, "z_dim", "g_width", "g_depth", "width", "blocks", "depth", "g_sigma")
        require(len(self.mults) > 0 and all(m > 0 for m in self.mults), f"{path}.mults: positive integers")

    # What the denoiser architectures' builders read beyond the fields: no patch folding and no
    # classes; the densities read σ (scale and shift of each block's features) when there is a range of
    # it (dde.sigma_max), DDE's `density_config` sets `conditional`; the U-Net's own GroupNorm groups.
    conditional = False
    sigma_data = 0.5  # a denoiser generator's σ_d: DDE sets dde.sigma_data
    patch = 1
    num_classes = 0
    adaptive_norm = True
    attention = ()
    dropout = 0.0
    group_channels = 1


@dataclass
class DDEOptimConfig(OptimConfig):
    betas: tuple[float, float] = (0.5, 0.999)
    lr_g: float = 1e-4
    lr_d: float = 1e-4                        # both density estimators


@dataclass
class DDEConfig:
    sigma: float = 0.1                        # the smoothing noise of both densities (the lowest, with sigma_max)
    # null: one smoothing level σ (Bigdeli et al. 2020). A value: a range [sigma, sigma_max] of them,
    # log-uniform: both densities are σ-conditional, each level's DSM trains them, and the generator
    # descends the KL of every level at once, weighted (σ/sigma)² (denoising/dde.py)
    sigma_max: Optional[float] = None
    sigma_data: float = 0.5
    weighting: one_of("dsm_weighting") = "score"   # the densities' DSM (denoising/losses.py)
    # energy: each density is a scalar, log p̃ = −E (Bigdeli et al.), trained through −∇ₓE (double
    # backprop). direct: each is a denoiser D (the DAE's), whose score (D − x)/σ² is all the
    # generator's gradient needs; no scalar density to evaluate, at a third of the step's cost
    parametrization: Literal["energy", "direct"] = "energy"
    q_steps: int = 1                          # updates of the generator's density per generator update
    # q̃ starts as a copy of p̃, so the generator's first gradient, ∇(E_p − E_q), is 0 and then only
    # what DSM taught the two apart; false: two independent initialisations, whose difference is a
    # random field of the network's own that the generator follows from step 0
    same_init: bool = True
    # A trained DAE's checkpoint: p̃ is its EMA denoiser, fixed (no DSM of the data), and q̃ and a
    # denoiser generator (model.g_arch: denoiser) start as its copies at a fresh run's step 0: the
    # generator distils the DAE (Diff-Instruct; SiD). model.* must be the DAE's net, σ_d its σ_d
    teacher: Optional[str] = None
    # The generator's loss, with direct densities (D_p, D_q at x̃ = G(z) + σε). integral_kl: gradient
    # (D_q − D_p)/σ_lo² in x̃ (Diff-Instruct). dmd: (D_q − D_p)/mean|G(z) − D_p| per example (DMD, Yin
    # et al. 2024). sid: SiD's loss (Zhou et al. 2024), (D_p − D_q)·((D_p − G(z)) − α(D_p − D_q)) /
    # mean|G(z) − D_p|, differentiated through both densities' inputs as well (α = sid_alpha)
    g_loss: Literal["integral_kl", "dmd", "sid"] = "integral_kl"
    sid_alpha: float = 1.2
    # DMD's regression loss (Yin et al. 2024), with dde.teacher and a denoiser generator: at step 0 the
    # teacher's probability-flow ODE (DPM-Solver++(2M), η 0, on regression_steps of EDM's levels over its
    # σ range) carries regression_pairs noises z from σ_max·z to images y, and every step adds
    # regression·½‖G(z) − y‖² (summed over pixels, a batch of pairs as large as the training batch), which
    # ties G's map to the teacher's and so keeps its modes. 0: off. Drawing the pairs counts in
    # train.max_minutes. Measured on Fashion-MNIST: configs/fashion_mnist_dde_cpu.yaml
    regression: float = 0.0
    regression_pairs: int = 2000
    regression_steps: int = 20

    def check(self, path):
        require_positive(self, path, "sigma", "sigma_data")
        require(self.sigma_max is None or self.sigma_max > self.sigma,
                f"{path}.sigma_max: must exceed sigma ({self.sigma}), or null for one smoothing level")
        require(self.q_steps >= 1, f"{path}.q_steps: must be >= 1")
        require(self.regression >= 0, f"{path}.regression: must be >= 0 (0 turns it off), got {self.regression}")
        require(self.regression_pairs >= 1, f"{path}.regression_pairs: must be >= 1, got {self.regression_pairs}")
        require(self.regression_steps >= 2, f"{path}.regression_steps: must be >= 2 (σ_max and σ_min), got "
                                            f"{self.regression_steps}")


# Sampler settings were once keys of the method's section; configs and checkpoints written then still load.
OLD_SAMPLER_KEYS = {"langevin": {"langevin_steps": "steps", "step_lr": "step_lr", "final_denoise": "final_denoise"},
                    "heun": {"heun_steps": "steps", "rho": "rho"}}


def upgrade_noise_section(section: dict) -> dict:
    """A dae:/ncsn:/ebm: section of the old form (sampler: NAME beside langevin_steps, step_lr,
    final_denoise, heun_steps, rho) in the new one (sampler: {name: NAME, <its settings>}): the
    chosen sampler takes its old keys, the other sampler's are dropped, as they were unused."""
    old = {k for keys in OLD_SAMPLER_KEYS.values() for k in keys}
    if not isinstance(section, dict) or not old & set(section):
        return section
    section = dict(section)
    sampler = section.get("sampler", "langevin")
    sampler = {"name": sampler} if isinstance(sampler, str) else sampler
    if not isinstance(sampler, dict):
        return section  # not a form this code knows: the parser names the problem
    moved = {new: section[key] for key, new in OLD_SAMPLER_KEYS.get(sampler.get("name"), {}).items()
             if key in section}
    for key in old:
        section.pop(key, None)
    section["sampler"] = {**moved, **sampler}  # a setting given in the new form wins
    return section
