"""Samplers: pure functions of a denoiser D(x; σ) (and its score s = (D − x)/σ²), an initial x and
noise levels, each registered by name with its own settings.

A registered sampler is called as sampler(denoiser, x, settings, schedule, generator, progress) -> x:
x starts at σ_1·z, `settings` is an instance of the dataclass it was registered with (its step count,
churn, snr, ...: what `<method>.sampler: {name: ..., ...}` in a config holds, checked against it), and
`schedule` is what the trained model tells every sampler (its ladder, σ range, and whether its net
knows only the ladder's levels). So a new sampler is one function and one dataclass, here or anywhere.

    langevin  annealed Langevin dynamics (Song & Ermon 2019, NCSNv2's step rule)
    heun      Heun's method on the probability-flow ODE (Karras et al. 2022, algorithm 1)
    edm       EDM's stochastic sampler: Heun with churn (Karras et al. 2022, algorithm 2)
    restart   Heun with K jumps back up a σ interval and down again (Xu et al. 2023, algorithm 1)
    euler_maruyama   the reverse-time VE SDE, Euler–Maruyama in τ = σ² (Song et al. 2021)
    ancestral the VE process's ancestral (posterior) steps (DDPM's sampler; Song et al. 2021)
    dpmpp_2m_sde  DPM-Solver++(2M) SDE: ancestral steps made second order (Lu et al. 2022)
    pc        predictor–corrector: reverse diffusion + Langevin at a target signal-to-noise ratio
              (Song et al. 2021, algorithm 5)

Langevin steps follow NCSN's and NCSNv2's code, x ← x + α s + √(2α) z, the step NCSNv2's step-size rule
(technique 4, denoising/schedule.py) is derived for; NCSN's paper writes the same dynamics as
x ← x + (α/2) s + √α z, so an ε read from its algorithm 1 is 2ε here, while one read from its code
(step_lr 2e-5 for CIFAR-10) is the same.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch

from common.graphs import GraphedInPlace
from common.registry import lookup, register
from common.schema import require, require_positive
from common.signals import stoppable
from .schedule import edm_sigmas, langevin_step_size


def _noise(x, generator):
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# ---------------------------------------------------------------------------------------------------
# The algorithms, as functions of score_fn(x, σ) / denoise_fn(x, σ) and plain numbers.

def langevin(score_fn, x, sigma: float, steps: int, step_size: float, generator=None):
    """Unadjusted Langevin dynamics at one noise level: x ← x + α s(x; σ) + √(2α) z."""
    for _ in range(steps):
        x = langevin_step(score_fn, x, sigma, step_size, generator)
    return x


def langevin_step(score_fn, x, sigma, step_size, generator=None):
    return x + step_size * score_fn(x, sigma) + (2 * step_size) ** 0.5 * _noise(x, generator)


def annealed_langevin(score_fn, x, sigmas, steps_per_level: int, step_lr: float, final_denoise: bool = True,
                      generator=None, cuda_graph: bool = False, progress: bool = False):
    """Annealed Langevin dynamics (Song & Ermon 2019, algorithm 1): T steps at each σ_i, from the
    largest to the smallest, with step α_i = ε·σ_i²/σ_L²; then, as NCSNv2 recommends, one
    denoising step x ← x + σ_L² s(x; σ_L) (= D(x; σ_L), Tweedie) to remove the last noise.
    With cuda_graph, the thousands of identical steps replay one captured step (σ and α as
    device scalars) instead of launching every kernel again. `progress` shows a bar over the levels."""
    sigmas = [float(s) for s in sigmas]
    levels = [(sigma, step_lr * (sigma / sigmas[-1]) ** 2) for sigma in sigmas]
    levels = stoppable(levels, "Langevin levels", progress)
    if cuda_graph:  # captured on CUDA; elsewhere the same parametrised step, run eagerly
        step = GraphedInPlace(lambda y, s, a: langevin_step(score_fn, y, s, a, generator),
                              x.clone(), x.new_tensor(sigmas[0]), x.new_tensor(step_lr), generator=generator)
        for sigma, alpha in levels:
            for _ in range(steps_per_level):
                x = step(sigma, alpha)
        x = x.clone()
    else:
        for sigma, alpha in levels:
            x = langevin(score_fn, x, sigma, steps_per_level, alpha, generator)
    if final_denoise:
        x = x + sigmas[-1] ** 2 * score_fn(x, sigmas[-1])
    return x


def heun(denoise_fn, x, sigmas, progress: bool = False):
    """Deterministic sampling of the probability-flow ODE dx/dσ = (x − D(x; σ))/σ with Heun's
    2nd-order method (Karras et al. 2022, algorithm 1). `sigmas` decreases to a final 0 and x
    starts at σ_0·N(0, I); n levels cost 2n − 1 network evaluations."""
    return edm_stochastic(denoise_fn, x, sigmas, churn=0.0, progress=progress)


def edm_stochastic(denoise_fn, x, sigmas, churn: float, tmin: float = 0.0, tmax: float = math.inf,
                   s_noise: float = 1.0, round_sigma=float, generator=None, progress: bool = False):
    """EDM's stochastic sampler (Karras et al. 2022, algorithm 2): at each level t_i in [tmin, tmax],
    first raise the noise to t̂ = t_i(1 + γ), γ = min(churn/N, √2 − 1), by adding fresh noise of
    variance t̂² − t_i² (times s_noise²), then take Heun's step from t̂ to t_{i+1} (Euler on the last
    step, to 0). The churn's fresh noise lets later levels correct the errors earlier ones made;
    churn = 0 is Heun's method exactly. N levels cost 2N − 1 evaluations. `round_sigma` maps t̂
    to a level the network supports (EDM's net.round_sigma)."""
    sigmas = [float(s) for s in sigmas]
    n = len(sigmas) - 1
    gamma = min(churn / n, math.sqrt(2) - 1) if n else 0.0
    plan = [(t_cur, round_sigma(t_cur * (1 + gamma)) if gamma and tmin <= t_cur <= tmax else t_cur, t_next)
            for t_cur, t_next in zip(sigmas[:-1], sigmas[1:])]
    return noised_heun(denoise_fn, x, plan, s_noise, generator, progress, "EDM steps" if churn else "Heun steps")


def noised_heun(denoise_fn, x, plan, s_noise: float = 1.0, generator=None, progress: bool = False,
                desc: str = "steps"):
    """Heun's steps on the probability-flow ODE, each after an optional rise of the noise: for each
    (t, t̂, t_next) in `plan`, add fresh noise of variance (t̂² − t²)·s_noise² when t̂ > t, then step
    from t̂ to t_next (Euler when t_next = 0). EDM's churn and Restart's jumps are such rises."""
    for t_cur, t_hat, t_next in stoppable(plan, desc, progress):
        if t_hat > t_cur:
            x = x + math.sqrt(t_hat ** 2 - t_cur ** 2) * s_noise * _noise(x, generator)
        d = (x - denoise_fn(x, t_hat)) / t_hat
        x_next = x + (t_next - t_hat) * d
        if t_next > 0:  # second-order correction, skipped on the last step to σ = 0
            d_next = (x_next - denoise_fn(x_next, t_next)) / t_next
            x_next = x + (t_next - t_hat) * 0.5 * (d + d_next)
        x = x_next
    return x


def restart_plan(sigmas, intervals, rho: float = 7.0, round_sigma=float) -> list[tuple[float, float, float]]:
    """Restart's steps (Xu et al. 2023, algorithm 1) as noised_heun's plan: Heun down `sigmas`
    (ending at 0), and on reaching the level nearest each interval's t_min, K times over: jump to
    t_max with fresh noise and come back down to that level with Heun on `steps` ρ-spaced levels.
    `intervals`: (steps, K, t_min, t_max) each. Levels pass through `round_sigma`."""
    sigmas = [float(s) for s in sigmas]
    restarts = {}  # index of a main level > 0 -> the restarts made on reaching it
    for steps, k, t_min, t_max in intervals:
        at = min(range(1, len(sigmas) - 1), key=lambda i: abs(sigmas[i] - t_min))
        require(t_max > sigmas[at], f"restarts: t_max {t_max:g} must lie above the level nearest t_min {t_min:g}, "
                                    f"{sigmas[at]:.4g} (this model's levels run from {sigmas[0]:.4g} to {sigmas[-2]:.4g})")
        back = [round_sigma(float(s)) for s in edm_sigmas(steps, sigmas[at], t_max, rho)[:-1]]
        restarts.setdefault(at, []).extend([back] * k)
    plan = []
    for i, (t_cur, t_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        plan.append((t_cur, t_cur, t_next))
        for back in restarts.get(i + 1, ()):
            plan.append((t_next, back[0], back[1]))
            plan.extend((t, t, t_after) for t, t_after in zip(back[1:-1], back[2:]))
    return plan


def reverse_sde(denoise_fn, x, sigmas, generator=None, progress: bool = False):
    """Euler–Maruyama on the reverse-time VE SDE (Song et al. 2021), dx = −d[σ²] ∇log p_σ(x) + dw̄ in
    time τ = σ²: x ← x + (σ_i² − σ_{i+1}²) s(x; σ_i) + √(σ_i² − σ_{i+1}²) z. In τ this is exactly
    EM; it is also the paper's reverse-diffusion predictor. The last step, to σ = 0, adds no noise
    and lands on D(x; σ_N) (Tweedie). One evaluation per level."""
    sigmas = [float(s) for s in sigmas]
    for s_cur, s_next in stoppable(list(zip(sigmas[:-1], sigmas[1:])), "SDE steps", progress):
        x = reverse_sde_step(denoise_fn, x, s_cur, s_next, generator)
    return x


def reverse_sde_step(denoise_fn, x, s_cur: float, s_next: float, generator=None):
    dtau = s_cur ** 2 - s_next ** 2
    score = (denoise_fn(x, s_cur) - x) / s_cur ** 2
    x = x + dtau * score
    return x + math.sqrt(dtau) * _noise(x, generator) if s_next > 0 else x


def ancestral_step(denoise_fn, x, s_cur: float, s_next: float, generator=None):
    """A draw from the Gaussian posterior of x at σ_next given x at σ_cur, with the clean image's
    posterior mean D(x; σ_cur) in place of the image (DDPM's ancestral step for the VE process, Song
    et al. 2021's ancestral-sampling predictor): mean x + (1 − σ_next²/σ_cur²)(D − x), variance
    σ_next²(σ_cur² − σ_next²)/σ_cur². It lands on noise level σ_next whatever the step's size, where
    Euler–Maruyama's √(σ_cur² − σ_next²) z leaves about σ_cur of noise after a large step."""
    ratio = s_next ** 2 / s_cur ** 2
    x = x + (1 - ratio) * (denoise_fn(x, s_cur) - x)
    return x + s_next * math.sqrt(1 - ratio) * _noise(x, generator) if s_next > 0 else x


def dpmpp_2m_sde(denoise_fn, x, sigmas, eta: float = 1.0, s_noise: float = 1.0, solver: str = "midpoint",
                 generator=None, progress: bool = False):
    """DPM-Solver++(2M) SDE (Lu et al. 2022, DPM-Solver++; the SDE form of k-diffusion's
    sample_dpmpp_2m_sde): in h = log(σ_i/σ_{i+1}), each step is the exact solution of the linear part
    around the denoised estimate D_i,

        x ← (σ_{i+1}/σ_i)e^{−ηh} x + (1 − e^{−(1+η)h}) D_i + σ_{i+1}√(1 − e^{−2ηh}) s_noise z,

    plus a second-order multistep term from the previous step's estimate, (D_i − D_{i−1})·h/h_prev
    times ½(1 − e^{−(1+η)h}) (`midpoint`) or 1 − (1 − e^{−(1+η)h})/((1+η)h) (`heun`); the last step,
    to σ = 0, lands on D. η = 1: without the multistep term a step is the ancestral step (the
    Gaussian posterior of the VE process), so the sampler is ancestral sampling made second order;
    η = 0: the probability-flow ODE (DPM-Solver++(2M)). One evaluation per level."""
    sigmas = [float(s) for s in sigmas]
    old, h_last = None, None
    for s_cur, s_next in stoppable(list(zip(sigmas[:-1], sigmas[1:])), "DPM-Solver++ steps", progress):
        denoised = denoise_fn(x, s_cur)
        if s_next == 0:
            x = denoised
            continue
        h = math.log(s_cur) - math.log(s_next)
        eta_h = eta * h
        decay = -math.expm1(-h - eta_h)  # 1 − e^{−(1+η)h}
        x = s_next / s_cur * math.exp(-eta_h) * x + decay * denoised
        if old is not None:
            weight = 0.5 * decay if solver == "midpoint" else decay / (-h - eta_h) + 1
            x = x + weight * h / h_last * (denoised - old)
        if eta:
            x = x + _noise(x, generator) * s_next * math.sqrt(-math.expm1(-2 * eta_h)) * s_noise
        old, h_last = denoised, h
    return x


def langevin_corrector(denoise_fn, x, sigma: float, snr: float, steps: int, generator=None):
    """Song et al. (2021)'s corrector: Langevin steps x ← x + ε s + √(2ε) z at one level, with ε set so
    that the signal-to-noise ratio ‖ε s‖/‖√(2ε) z‖ is `snr`: ε = 2(r‖z‖/‖s‖)², the norms averaged over
    the batch as in score_sde's code (per sample, ε blows up where ‖s‖ → 0, at a mode; in d = 3 the
    covariance then came out 100% off)."""
    for _ in range(steps):
        score = (denoise_fn(x, sigma) - x) / sigma ** 2
        z = _noise(x, generator)
        eps = 2 * (snr * z.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean().clamp_min(1e-30)) ** 2
        x = x + eps * score + (2 * eps).sqrt() * z
    return x


def ancestral(denoise_fn, x, sigmas, generator=None, progress: bool = False):
    """Ancestral sampling down the levels (ancestral_step), one evaluation per level."""
    sigmas = [float(s) for s in sigmas]
    for s_cur, s_next in stoppable(list(zip(sigmas[:-1], sigmas[1:])), "ancestral steps", progress):
        x = ancestral_step(denoise_fn, x, s_cur, s_next, generator)
    return x


PREDICTORS = {"reverse_diffusion": reverse_sde_step, "ancestral": ancestral_step}


def predictor_corrector(denoise_fn, x, sigmas, snr: float, corrector_steps: int = 1, generator=None,
                        progress: bool = False, predictor: str = "reverse_diffusion"):
    """Predictor–corrector sampling (Song et al. 2021, algorithm 5 for the VE SDE): at each level, first
    `corrector_steps` Langevin corrector steps at signal-to-noise ratio `snr`, then one predictor step
    to the next level (reverse diffusion, or ancestral sampling; the last to σ = 0, noise-free).
    (1 + corrector_steps) evaluations per level."""
    sigmas, step = [float(s) for s in sigmas], PREDICTORS[predictor]
    for s_cur, s_next in stoppable(list(zip(sigmas[:-1], sigmas[1:])), "PC steps", progress):
        x = langevin_corrector(denoise_fn, x, s_cur, snr, corrector_steps, generator)
        x = step(denoise_fn, x, s_cur, s_next, generator)
    return x


# ---------------------------------------------------------------------------------------------------
# What a trained model tells every sampler, and the samplers a config can name with their settings.

@dataclass(frozen=True)
class Schedule:
    sigmas: torch.Tensor       # the trained ladder σ_1 > … > σ_L, on the device
    on_ladder: bool            # a σ-conditional net trained on the ladder's levels only
    cuda_graph: bool = False   # capture repeated steps as one CUDA graph (train.cuda_graph)

    @classmethod
    def of(cls, sigmas: torch.Tensor, sigma_sampling: str, conditional: bool, cuda_graph: bool = False) -> Schedule:
        """What every sampler is told of a model: its ladder, and whether its net knows only the
        ladder's levels (σ-conditional and trained on them, by `sigma_sampling`)."""
        on_ladder = getattr(lookup("sigma_sampling", sigma_sampling), "on_ladder", False)
        return cls(sigmas, on_ladder and conditional, cuda_graph)

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[-1])

    def levels(self, steps: int, rho: float) -> torch.Tensor:
        """The levels a sampler steps on, from σ_max down to a final 0. A σ-conditional network
        trained on the discrete ladder has seen those levels only, and between them its output is
        arbitrary (on the 8-Gaussians toy: cosine 0.1 with the exact score at σ = 0.07, between
        levels 0.05 and 0.09), so it steps on its own ladder (L levels). A network trained on
        continuous σ, or NCSNv2's unconditional one (s = F(x)/σ), takes EDM's `steps` ρ-spaced levels."""
        if self.on_ladder:
            return torch.cat([self.sigmas.double().cpu(), torch.zeros(1, dtype=torch.float64)])
        return edm_sigmas(steps, self.sigma_min, self.sigma_max, rho)

    def round_sigma(self, sigma: float) -> float:
        """The level nearest to σ (in log) that the network knows: σ itself, or a ladder level."""
        if not self.on_ladder:
            return sigma
        ladder = self.sigmas.double().cpu()
        return float(ladder[(ladder.log() - math.log(sigma)).abs().argmin()])


class _Recorder:
    """A stand-in denoiser, D(x; σ) = x (score 0), that records the level σ of each evaluation."""

    def __init__(self):
        self.sigmas: list[float] = []

    def __call__(self, x, sigma):
        self.sigmas.append(float(torch.as_tensor(sigma).flatten()[0]))
        return x

    def score(self, x, sigma, create_graph: bool = False, **_):
        return self(x, sigma) * 0


def evaluation_sigmas(sampler, settings, schedule: Schedule, shape) -> list[float]:
    """The level σ of each evaluation of D that `sampler` makes for one sample of `shape` on `schedule`
    (as many as settings.nfe(schedule)), recorded by running it on the CPU on a stand-in D(x; σ) = x.
    What guidance limited to an interval of σ costs depends on them (denoising/guidance.py)."""
    recorder = _Recorder()
    schedule = dataclasses.replace(schedule, sigmas=schedule.sigmas.detach().cpu(), cuda_graph=False)
    sampler(recorder, torch.zeros(1, *shape), settings, schedule, torch.Generator().manual_seed(0), False)
    return recorder.sigmas


@dataclass
class SamplerSettings:
    """A sampler's settings: `name` and the fields of a subclass (registered with `settings=`)."""
    name: str = ""

    def check(self, path: str):
        """Each setting's domain (raise ConfigError naming path.key)."""

    def unused(self, schedule: Schedule) -> tuple[str, ...]:
        """Settings that change nothing for this model (e.g. the step count of a net that steps on
        its own ladder): scripts refuse them when given on the command line."""
        return ()

    def nfe(self, schedule: Schedule) -> int | None:
        """Network evaluations per sample (an energy model's: a forward and a backward pass each)."""
        return None


@dataclass
class LangevinSettings(SamplerSettings):
    steps: int = 5                          # T per level of the trained ladder
    step_lr: Optional[float] = None         # ε; null: NCSNv2 technique 4 for this ladder and T
    final_denoise: bool = True              # end with x ← D(x; σ_L)

    def check(self, path):
        require(self.steps >= 1, f"{path}.steps: must be >= 1, got {self.steps}")
        require_positive(self, path, "step_lr", optional=True)

    def nfe(self, schedule):
        return len(schedule.sigmas) * self.steps + int(self.final_denoise)


@register("sampler", "langevin", settings=LangevinSettings)
def langevin_sampler(denoiser, x, settings: LangevinSettings, schedule: Schedule, generator=None,
                     progress: bool = False):
    """Annealed Langevin dynamics on the trained ladder, `steps` per level, ε = step_lr."""
    eps = settings.step_lr or langevin_step_size(schedule.sigmas.cpu(), settings.steps, x[0].numel())
    return annealed_langevin(denoiser.score, x, schedule.sigmas, settings.steps, eps, settings.final_denoise,
                             generator, schedule.cuda_graph, progress)


@dataclass
class LevelSettings(SamplerSettings):
    """Settings of a sampler that steps down `steps` of EDM's ρ-spaced levels (or the ladder)."""
    steps: int = 18                         # levels from σ_max to σ_min (then 0)
    rho: float = 7.0                        # EDM's level spacing: evenly spaced in σ^(1/ρ)

    def check(self, path):
        require(self.steps >= 2, f"{path}.steps: must be >= 2 (σ_max and σ_min), got {self.steps}")
        require_positive(self, path, "rho")

    def unused(self, schedule):
        return ("steps", "rho") if schedule.on_ladder else ()

    def levels(self, schedule: Schedule) -> torch.Tensor:
        return schedule.levels(self.steps, self.rho)


@dataclass
class HeunSettings(LevelSettings):
    def nfe(self, schedule):
        return 2 * (len(self.levels(schedule)) - 1) - 1


@register("sampler", "heun", settings=HeunSettings, needs_range=True)
def heun_sampler(denoiser, x, settings: HeunSettings, schedule: Schedule, generator=None, progress: bool = False):
    """Heun's method on the probability-flow ODE (deterministic: no generator)."""
    return heun(denoiser, x, settings.levels(schedule), progress)


@dataclass
class EDMSettings(HeunSettings):
    churn: float = 5.0                      # S_churn: γ = min(churn/N, √2 − 1) per level (0.28 at N = 18)
    tmin: float = 0.05                      # S_tmin, S_tmax: the levels that get churn
    tmax: float = 50.0
    noise: float = 1.003                    # S_noise: the fresh noise's inflation

    def check(self, path):
        super().check(path)
        require(self.churn >= 0, f"{path}.churn: must be >= 0 (0 is Heun's method), got {self.churn}")
        require(0 <= self.tmin <= self.tmax, f"{path}.tmin: must be in [0, tmax = {self.tmax}], got {self.tmin}")
        require_positive(self, path, "noise")


@register("sampler", "edm", settings=EDMSettings, needs_range=True)
def edm_sampler(denoiser, x, settings: EDMSettings, schedule: Schedule, generator=None, progress: bool = False):
    """EDM's stochastic sampler on the same levels as Heun."""
    return edm_stochastic(denoiser, x, settings.levels(schedule), settings.churn, settings.tmin, settings.tmax,
                          settings.noise, schedule.round_sigma, generator, progress)


@dataclass
class RestartSettings(HeunSettings):
    # (steps, K, t_min, t_max) per interval: K restarts from the main level nearest t_min up to t_max,
    # each back down on `steps` levels (2·(steps − 1) evaluations); Xu et al.'s CIFAR-10 EDM setting
    restarts: list[tuple[int, int, float, float]] = field(default_factory=lambda: [(3, 2, 0.14, 0.30)])
    noise: float = 1.003                    # S_noise of the jumps' fresh noise

    def check(self, path):
        super().check(path)
        require_positive(self, path, "noise")
        for i, (steps, k, t_min, t_max) in enumerate(self.restarts):
            require(steps >= 2 and k >= 0 and 0 < t_min < t_max,
                    f"{path}.restarts[{i}]: must be [steps >= 2, K >= 0, t_min, t_max] with 0 < t_min < t_max, "
                    f"got {[steps, k, t_min, t_max]}")

    def plan(self, schedule: Schedule):
        return restart_plan(self.levels(schedule), self.restarts, self.rho, schedule.round_sigma)

    def nfe(self, schedule):
        return sum(2 - (t_next == 0) for _, _, t_next in self.plan(schedule))


@register("sampler", "restart", settings=RestartSettings, needs_range=True)
def restart_sampler(denoiser, x, settings: RestartSettings, schedule: Schedule, generator=None,
                    progress: bool = False):
    """Restart (Xu et al. 2023): Heun's ODE with jumps back up a σ interval, fresh noise each time."""
    return noised_heun(denoiser, x, settings.plan(schedule), settings.noise, generator, progress, "Restart steps")


@dataclass
class SDESettings(LevelSettings):
    """Settings of a sampler that evaluates the net once a level."""
    steps: int = 50

    def nfe(self, schedule):
        return len(self.levels(schedule)) - 1


@register("sampler", "euler_maruyama", settings=SDESettings, needs_range=True)
def euler_maruyama_sampler(denoiser, x, settings: SDESettings, schedule: Schedule, generator=None,
                           progress: bool = False):
    """Euler–Maruyama on the reverse-time VE SDE."""
    return reverse_sde(denoiser, x, settings.levels(schedule), generator, progress)


@register("sampler", "ancestral", settings=SDESettings, needs_range=True)
def ancestral_sampler(denoiser, x, settings: SDESettings, schedule: Schedule, generator=None, progress: bool = False):
    """Ancestral sampling of the VE process (DDPM's posterior steps)."""
    return ancestral(denoiser, x, settings.levels(schedule), generator, progress)


@dataclass
class DPMSolverSettings(SDESettings):
    steps: int = 20
    eta: float = 1.0                        # the fresh noise: 1 the reverse SDE's, 0 the ODE
    noise: float = 1.0                      # s_noise
    solver: Literal["midpoint", "heun"] = "midpoint"  # the multistep term's form (k-diffusion's solver_type)

    def check(self, path):
        super().check(path)
        require(self.eta >= 0, f"{path}.eta: must be >= 0 (0: the ODE), got {self.eta}")
        require_positive(self, path, "noise")


@register("sampler", "dpmpp_2m_sde", settings=DPMSolverSettings, needs_range=True)
def dpmpp_2m_sde_sampler(denoiser, x, settings: DPMSolverSettings, schedule: Schedule, generator=None,
                         progress: bool = False):
    """DPM-Solver++(2M) SDE: ancestral steps made second order (η 0: DPM-Solver++(2M) on the ODE)."""
    return dpmpp_2m_sde(denoiser, x, settings.levels(schedule), settings.eta, settings.noise, settings.solver,
                        generator, progress)


@dataclass
class PCSettings(LevelSettings):
    steps: int = 25
    snr: float = 0.16                       # the corrector's signal-to-noise ratio r
    corrector_steps: int = 1                # Langevin corrector steps per level
    predictor: Literal["reverse_diffusion", "ancestral"] = "reverse_diffusion"

    def check(self, path):
        super().check(path)
        require_positive(self, path, "snr")
        require(self.corrector_steps >= 0, f"{path}.corrector_steps: must be >= 0, got {self.corrector_steps}")

    def nfe(self, schedule):
        return (len(self.levels(schedule)) - 1) * (1 + self.corrector_steps)


@register("sampler", "pc", settings=PCSettings, needs_range=True)
def pc_sampler(denoiser, x, settings: PCSettings, schedule: Schedule, generator=None, progress: bool = False):
    """Predictor–corrector: reverse diffusion + Langevin corrector."""
    return predictor_corrector(denoiser, x, settings.levels(schedule), settings.snr, settings.corrector_steps,
                               generator, progress, settings.predictor)
