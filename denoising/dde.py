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

With `dde.sigma_max`, both densities are σ-conditional and every term is taken at σ log-uniform in
[σ_lo, σ_hi] (σ_lo = dde.sigma), each example its own: the generator then descends the KL between the
smoothed densities of every level at once (the integral KL of Diff-Instruct, Luo et al. 2023), with
weight (σ/σ_lo)², under which level σ's gradient is (D_q − D_p)(x̃; σ)/σ_lo², the difference of the two
denoisers' estimates, bounded at every σ. One level alone only sees the generator's errors at its own
scale: at σ = 2 a pixel-scale defect hardly changes the smoothed density, so it goes uncorrected.

The generator needs only the gradient of log q̃ − log p̃, the difference of the two scores. With
`dde.parametrization: direct` each density is a denoiser D (the DAE's parametrisation), whose score is
(D − x)/σ²: no scalar density, but no double backpropagation either, and the generator's term is two
forward passes with no graph (a step costs about a third of the energy form's; configs/
fashion_mnist_dde_cpu.yaml). q̃ starts as a copy of p̃ (`dde.same_init`), so G's first gradient is 0.

With `dde.teacher` (a trained DAE's checkpoint) p̃ is that DAE's denoiser, frozen: no DSM_p term, the
generator distils it as Diff-Instruct (Luo et al. 2023) and SiD (Zhou et al. 2024) distil a diffusion
model, with q̃ (the "fake score") starting as its copy. `model.g_arch: denoiser` is SiD's one-step
generator, G(z) = D_G(σ_g·z; σ_g) for image-shaped z ~ N(0, I) at σ_g = model.g_sigma, a U-Net of the
densities' shape; started from the teacher too, its first samples are the teacher's one-step
denoising of pure noise at σ_g, not a random net's output.

With direct densities `dde.g_loss` picks G's loss. `integral_kl` is the gradient above. `dmd` divides
the same difference per example by mean|G(z) − D_p(x̃)| instead of σ_lo² (DMD, Yin et al. 2024): each
level and example weighed by how far the teacher moves it, which lifts the small σ, where both are
small. `sid` is SiD's loss (Zhou et al. 2024), with g = D_p − D_q and r = D_p − G(z) at x̃,

    L_G = g·(r − α g) / sg(mean|r|)         (α = dde.sid_alpha, 1.2 in SiD)

differentiated through both densities' inputs as well (their weights stopped): one more backward pass
through each density, no weight gradients.

`dde.regression` > 0 adds DMD's regression loss (Yin et al. 2024): at a fresh run's step 0 the teacher's
probability-flow ODE (DPM-Solver++(2M) with no fresh noise: deterministic) carries N fixed noises z,
drawn from the run's seed, from σ_max·z to images y(z), and each step adds λ·½‖G(z) − y(z)‖² on a batch
of those pairs. The KL terms match G's density to the teacher's whatever G's map is, and can let it drop
modes; the regression ties the map itself to the teacher's, which covers them. (DMD measures the gap with
LPIPS; this is the plain squared error.) The targets are saved with the checkpoint, so a resumed run
regresses on the same ones.
"""
from __future__ import annotations

import copy

import torch

from common.checkpoint import load_checkpoint, state_dict_mismatch
from common.errors import CheckpointError, ConfigError, UserError
from common.method import GeneratorMethod, require_arch_fits_data
from common.registry import lookup, register
from common.schema import require_square
from common.stopgrad import frozen
from networks import DCGANGenerator, MLPGenerator
from networks.dcgan import require_dcgan_size
from . import architectures  # noqa: F401  (registers the density networks' architectures)
from .config import DDEConfig, DDEModelConfig, DDEOptimConfig
from .denoiser import Denoiser, per_example
from .losses import dsm_loss
from .samplers import DPMSolverSettings, Schedule
from .schedule import geometric_sigmas, log_uniform


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


class DenoiserGenerator(torch.nn.Module):
    """SiD's one-step generator: G(z) = D(σ_g·z; σ_g), the denoiser D (EDM's direct preconditioning
    at σ_d) of a σ-conditional network, applied to image-shaped noise z ~ N(0, I) scaled to σ_g."""

    def __init__(self, net: torch.nn.Module, sigma: float, sigma_data: float, shape: tuple):
        super().__init__()
        self.denoiser, self.sigma, self.latent_shape = Denoiser(net, "direct", sigma_data), sigma, tuple(shape)

    def forward(self, z):
        return self.denoiser(self.sigma * z, z.new_full((z.shape[0],), self.sigma))


@register("generator_arch", "denoiser")
def denoiser_generator(m: DDEModelConfig, info) -> torch.nn.Module:
    """A σ-conditional network of the densities' shape (model.arch and its settings), read as a
    one-step denoiser of noise at model.g_sigma (σ_d: dde.sigma_data, which DDE sets on m)."""
    density = copy.copy(m)
    density.conditional = True
    net = lookup("denoiser_arch", m.arch)(density, info)
    return DenoiserGenerator(net, m.g_sigma, m.sigma_data, info.shape)


def teacher_weights(path, info, sigma_data: float) -> tuple[dict, dict]:
    """dde.teacher's network weights (its EMA average where it has one) and config, checked to be a
    DAE of this data's shape and σ_d; anything else is one line naming the key."""
    fix = "name a DAE checkpoint trained on this data (scripts/train.py --config configs/<data>_dae*.yaml)"
    try:
        ckpt = load_checkpoint(path, missing=f"train the teacher first, or {fix}")
    except UserError as e:
        raise type(e)(f"dde.teacher: {e}") from None
    cfg, state, shape = ckpt["config"], ckpt["state"], tuple(ckpt["data_info"]["shape"])
    if cfg.get("method") != "dae":
        raise ConfigError(f"dde.teacher: {path} is a {cfg.get('method')} checkpoint; {fix}")
    if shape != tuple(info.shape):
        raise ConfigError(f"dde.teacher: {path} was trained on {shape} images, this data is {tuple(info.shape)}; {fix}")
    if cfg["dae"]["sigma_data"] != sigma_data:
        raise ConfigError(f"dde.teacher: {path} has sigma_data {cfg['dae']['sigma_data']}; set "
                          f"dde.sigma_data={cfg['dae']['sigma_data']}")
    ema = state.get("ema", {}).get("net")
    weights = ({k.removeprefix("module."): v for k, v in ema.items() if k != "n_averaged"} if ema else
               {k.removeprefix("net."): v for k, v in state["nets"].items()})
    return weights, cfg


def build_generator(m: DDEModelConfig, info) -> torch.nn.Module:
    """The generator model.g_arch names (`@register("generator_arch", NAME)`, `points=True` for
    toy 2-D data)."""
    return lookup("generator_arch", m.g_arch, "model.g_arch")(m, info)


@register("method", "dde")
class DDE(GeneratorMethod):
    ModelConfig, OptimConfig, Config = DDEModelConfig, DDEOptimConfig, DDEConfig
    networks = ("G", "p", "q")
    saved_defaults = {"dde": {"same_init": False}}  # what configs saved before a key meant by it
    ema_networks = ("G",)

    @classmethod
    def needs_double_backward(cls, cfg):
        return cfg.dde.parametrization == "energy"  # both densities are trained through −∇E

    @classmethod
    def check_config(cls, cfg):
        require_arch_fits_data(cfg, "generator_arch", "g_arch")
        require_arch_fits_data(cfg, "denoiser_arch")
        d = cfg.dde
        if d.teacher and (d.parametrization != "direct" or d.sigma_max is None):
            raise ConfigError("dde.teacher: a DAE teacher is a σ-conditional direct denoiser; set "
                              "dde.parametrization=direct and a range dde.sigma_max (or drop dde.teacher)")
        if d.g_loss != "integral_kl" and d.parametrization != "direct":
            raise ConfigError(f"dde.g_loss: {d.g_loss} is written in the two denoisers D_p, D_q; set "
                              "dde.parametrization=direct (or dde.g_loss=integral_kl)")
        if d.regression and not (d.teacher and cfg.model.g_arch == "denoiser"):
            raise ConfigError("dde.regression: regresses a denoiser generator's G(z) on the teacher's ODE from "
                              "σ_max·z; set dde.teacher=PATH and model.g_arch=denoiser, or dde.regression=0")

    def __init__(self, cfg, info, device, runtime=None):
        super().__init__(cfg, info, device, runtime)
        generator_config = copy.copy(cfg.model)
        generator_config.sigma_data = cfg.dde.sigma_data  # a denoiser generator's σ_d
        self.add_network("G", build_generator(generator_config, info))
        density = lookup("denoiser_arch", cfg.model.arch)
        for name in ("p", "q"):
            self.add_network(name, density(self.density_config(cfg), info))
        if cfg.dde.same_init:
            self.nets["q"].load_state_dict(self.nets["p"].state_dict())
        o = cfg.optim
        trained = {"G": o.lr_g, "p": o.lr_d, "q": o.lr_d}
        if cfg.dde.teacher:  # p̃ is the teacher's: never trained
            self.nets["p"].requires_grad_(False)
            del trained["p"]
        self.optimizers = {"all": self.adam(trained)}
        d = cfg.dde  # the smoothing range, σ_hi > σ_lo as the σ samplers read a ladder; None: one level
        self.smoothing_range = (None if d.sigma_max is None
                                else torch.tensor([d.sigma_max, d.sigma], device=self.device))
        self.pairs = None  # dde.regression's (z, y(z)): drawn by warm_start, or loaded with the checkpoint

    def warm_start(self):
        """At a fresh run's step 0, with dde.teacher: p̃ becomes the teacher DAE's (EMA) denoiser, q̃ and
        a denoiser generator its copies. A teacher that does not fit is one line naming the key."""
        if not self.cfg.dde.teacher:
            return
        weights, teacher = teacher_weights(self.cfg.dde.teacher, self.info, self.cfg.dde.sigma_data)
        model = teacher["model"]
        try:
            self.nets["p"].load_state_dict(weights)
        except RuntimeError as e:
            raise ConfigError(f"dde.teacher: its network does not fit model.* ({state_dict_mismatch(e)[:120]}): "
                              f"set model.arch={model['arch']} "
                              f"model.width={model['width']} model.mults=[{','.join(map(str, model['mults']))}] "
                              f"model.blocks={model['blocks']} as the teacher's") from None
        self.nets["q"].load_state_dict(weights)
        if isinstance(self.nets["G"], DenoiserGenerator):
            self.nets["G"].denoiser.net.load_state_dict(weights)
        for name, avg in self.ema.items():
            avg.module.load_state_dict(self.nets[name].state_dict())
        if self.cfg.dde.regression:
            z = self.regression_latents()
            self.pairs = z, self.teacher_ode(teacher["dae"], z)

    def regression_latents(self) -> torch.Tensor:
        """dde.regression's N noises z: one seeded CPU draw, the same on every rank and machine."""
        g = torch.Generator().manual_seed(self.cfg.seed)
        return torch.randn(self.cfg.dde.regression_pairs, *self.nets["G"].latent_shape, generator=g).to(self.device)

    @torch.no_grad()
    def teacher_ode(self, teacher: dict, z: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """y(z) for the noises z: DPM-Solver++(2M) on the probability-flow ODE of p̃ (the teacher's
        denoiser; η = 0: no fresh noise) from σ_max·z, on dde.regression_steps of EDM's levels over the
        teacher's σ range (or its ladder, where it was trained on the ladder's levels only), as the teacher
        samples; the net in the run's precision, the ODE's arithmetic in fp32."""
        sigmas = geometric_sigmas(teacher["sigma_max"], teacher["sigma_min"], teacher["num_scales"])
        schedule = Schedule.of(sigmas.to(self.device, torch.float32), teacher["sigma_sampling"],
                               conditional=True)  # p̃ reads σ (a teacher needs a range dde.sigma_max)
        settings = DPMSolverSettings("dpmpp_2m_sde", self.cfg.dde.regression_steps, eta=0.0)
        ode = lookup("sampler", settings.name)
        net = self.nets["p"]
        D, was_training = Denoiser(net, "direct", self.cfg.dde.sigma_data), net.training
        net.eval()
        try:
            with self.autocast():
                return torch.cat([ode(D, part * schedule.sigmas[0], settings, schedule).float()
                                  for part in z.split(batch)])
        finally:
            net.train(was_training)

    def state_dict(self) -> dict:
        state = super().state_dict()
        return state if self.pairs is None else {**state, "regression_targets": self.pairs[1].cpu()}

    def load_state_dict(self, state: dict, weights_only: bool = False) -> list[str]:
        """As every method's, and dde.regression's targets y(z) (z is redrawn from the seed)."""
        changes = super().load_state_dict(state, weights_only)
        if self.cfg.dde.regression and not weights_only:
            if "regression_targets" not in state:
                raise CheckpointError("dde.regression: the checkpoint has no regression targets (it was trained "
                                      "without them); resume it with dde.regression=0, or start a new run")
            self.pairs = self.regression_latents(), state["regression_targets"].to(self.device)
        return changes

    @staticmethod
    def density_config(cfg) -> DDEModelConfig:
        """The model section as the density networks' builder reads it: σ-conditional over a range."""
        m = copy.copy(cfg.model)
        m.conditional = cfg.dde.sigma_max is not None
        return m

    def density(self, name: str) -> Denoiser:
        """The denoiser of network p (data) or q (generator): energy-parametrised (log density = −E)
        or direct (dde.parametrization)."""
        return Denoiser(self.training_net(name), self.cfg.dde.parametrization, self.cfg.dde.sigma_data)

    def smoothing(self, n: int) -> torch.Tensor:
        """n smoothing levels: dde.sigma, or log-uniform over [sigma, sigma_max]."""
        if self.smoothing_range is None:
            return torch.full((n,), self.cfg.dde.sigma, device=self.device)
        return log_uniform(n, self.smoothing_range, self.cfg.dde, self.device)

    def sample_latents(self, n, generator=None):
        """z ~ N(0, I): model.z_dim numbers, or image-shaped for a denoiser generator."""
        shape = getattr(self.nets["G"], "latent_shape", (self.cfg.model.z_dim,))
        return torch.randn(n, *shape, device=self.device, generator=generator)

    def example_inputs(self, name, n):
        if name == "G":
            return super().example_inputs(name, n)
        return (torch.randn(n, *self.info.shape, device=self.device), torch.full((n,), self.cfg.dde.sigma, device=self.device))

    def training_step(self, batch, labels=None):  # unconditional: labels unused
        opt, weighting = self.optimizers["all"], self.cfg.dde.weighting
        P, Q = self.density("p"), self.density("q")

        def catch_up(part):
            x = part[0]
            with torch.no_grad(), self.autocast():
                fakes = self.training_net("G")(self.sample_latents(x.shape[0]))
            with self.autocast():
                return dsm_loss(Q, fakes, self.smoothing(x.shape[0]), weighting).mean(), {}

        def objective(part):
            with self.autocast():
                return self.objective(part[0], P, Q)
        for _ in range(self.cfg.dde.q_steps - 1):  # let q̃ catch up with the moving generator
            self.optimizer_step(opt, catch_up, self.micro_batches(batch))
        return self.optimizer_step(opt, objective, self.micro_batches(batch), "G", "p", "q")

    def objective(self, x, P, Q):
        """L = DSM_p(x) + DSM_q(sg(G(z))) + KL_sg(x̃) (+ λ·½‖G(z) − y(z)‖² on regression pairs) and its
        terms (module docstring)."""
        n, weighting = x.shape[0], self.cfg.dde.weighting
        z = self.sample_latents(n)
        if self.pairs is not None:  # a batch of regression pairs through the same forward pass
            chosen = torch.randint(len(self.pairs[0]), (n,), device=self.device)
            z = torch.cat([z, self.pairs[0][chosen]])
        x_fake = self.training_net("G")(z)
        reg = {}
        if self.pairs is not None:
            x_fake, mapped = x_fake[:n], x_fake[n:]
            reg = {"regression": 0.5 * (mapped.float() - self.pairs[1][chosen]).pow(2).flatten(1).sum(1).mean()}
        # with a teacher, p̃ is fixed: no DSM of the data
        dsm_p = {} if self.cfg.dde.teacher else {"dsm_p": dsm_loss(P, x, self.smoothing(n), weighting).mean()}
        dsm_q = dsm_loss(Q, x_fake.detach(), self.smoothing(n), weighting).mean()
        sigma = self.smoothing(n)
        x_noisy = x_fake + per_example(sigma, x_fake) * torch.randn_like(x_fake)
        P_sg, Q_sg = (Denoiser(frozen(d.net), d.parametrization, d.sigma_data) for d in (P, Q))
        g_loss, g_stats = self.kl(x_noisy, sigma, P_sg, Q_sg, x_fake)
        total = sum(dsm_p.values(), dsm_q + g_loss) + self.cfg.dde.regression * reg.get("regression", 0)
        stats = {k: v.detach() for k, v in {**dsm_p, "dsm_q": dsm_q, **reg}.items()}
        return total, {**stats, **g_stats}

    @staticmethod
    def g_scale(x_fake, d_p):
        """DMD's and SiD's per-example normaliser of the generator's gradient: mean |G(z) − D_p|."""
        with torch.no_grad():
            r = (x_fake - d_p).abs().flatten(1)
            return per_example(r.to(torch.promote_types(r.dtype, torch.float32)).mean(1).clamp(min=1e-5), x_fake)

    def kl(self, x_noisy, sigma, P, Q, x_fake=None) -> tuple[torch.Tensor, dict]:
        """The generator's loss at smoothed samples x̃ (σ per example) and what to log of it: the batch
        mean of (σ/σ_lo)²·(log q̃ − log p̃)(x̃; σ) up to a constant (`g_loss`), whose gradient in x̃ is
        (D_q − D_p)(x̃; σ)/(n σ_lo²) (module docstring). Direct densities have no log density: their
        loss is ⟨sg(that gradient), x̃⟩ (the same gradient, from two forward passes with no graph;
        its value is not the KL), and the log has `d_gap`, the rms pixel of D_q − D_p. dde.g_loss dmd and
        sid: the module docstring's forms, normalised by g_scale (they need x_fake = G(z))."""
        if P.parametrization == "energy":
            weight = (sigma / self.cfg.dde.sigma) ** 2  # 1 at one level
            g_loss = (weight * (P.energy(x_noisy, sigma) - Q.energy(x_noisy, sigma))).mean()
            return g_loss, {"g_loss": g_loss.detach()}
        s, kind = per_example(sigma, x_noisy), self.cfg.dde.g_loss
        if kind == "sid":  # through both densities' inputs
            d_p, d_q = P(x_noisy, s), Q(x_noisy, s)
            g = d_p - d_q
            loss = g * ((d_p - x_fake) - self.cfg.dde.sid_alpha * g) / self.g_scale(x_fake, d_p)
        else:
            with torch.no_grad():
                d_p, d_q = P(x_noisy, s), Q(x_noisy, s)
                scale = self.g_scale(x_fake, d_p) if kind == "dmd" else self.cfg.dde.sigma ** 2
            loss = (d_q - d_p) / scale * x_noisy
        gap = (d_q - d_p).detach().float()
        return loss.flatten(1).sum(1).mean(), {"d_gap": gap.pow(2).mean().sqrt()}
