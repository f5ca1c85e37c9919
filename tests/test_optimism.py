"""Optimistic updates (optim.optimistic, common/optimism.py): the formula, the game it is for, resume."""
import pytest
import torch

from common.errors import ConfigError
from common.optimism import optimistic
from conftest import assert_same_state, quick_config, train_straight_and_resumed
from data import DataInfo
from engine import build


def bilinear_play(cls, steps: int, lr: float = 0.1):
    """min_x max_y x·y from (1, 1), both players stepping together from the same point (one loss:
    x descends x·sg(y), y ascends sg(x)·y); the distance from the equilibrium (0, 0) afterwards."""
    x, y = torch.nn.Parameter(torch.tensor(1.0)), torch.nn.Parameter(torch.tensor(1.0))
    opt = cls([x, y], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (x * y.detach() - x.detach() * y).backward()
        opt.step()
    return torch.hypot(x, y).item()


def test_optimism_converges_on_the_bilinear_game_where_simultaneous_steps_spiral_out():
    """Simultaneous gradient steps on x·y multiply the distance from the equilibrium by √(1 + lr²)
    each step; optimistic ones (2g_t − g_{t−1}) shrink it."""
    steps, lr = 400, 0.1
    plain = bilinear_play(torch.optim.SGD, steps, lr)
    assert plain == pytest.approx(2 ** 0.5 * (1 + lr ** 2) ** (steps / 2), rel=1e-3)
    assert bilinear_play(optimistic(torch.optim.SGD), steps, lr) < 0.5


def adam_direction(g, m, v, t, betas, eps):
    """Adam's moments after gradient g at step t (1-based) and its bias-corrected direction."""
    m = betas[0] * m + (1 - betas[0]) * g
    v = betas[1] * v + (1 - betas[1]) * g * g
    return m, v, (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps)


def test_optimistic_adam_is_daskalakis_et_al_formula():
    """θ_{t+1} = θ_t − 2·lr·d_t + lr·d_{t−1} with d Adam's bias-corrected direction (Optimistic Adam,
    Daskalakis et al. 2018, Algorithm 1), written out here, on the gradients of a moving quadratic."""
    torch.manual_seed(0)
    lr, betas, eps = 0.01, (0.5, 0.9), 1e-8
    theta = torch.randn(7, dtype=torch.float64)
    p = torch.nn.Parameter(theta.clone())
    opt = optimistic(torch.optim.Adam)([p], lr=lr, betas=betas, eps=eps)
    m, v, last = torch.zeros_like(theta), torch.zeros_like(theta), torch.zeros_like(theta)
    targets = torch.randn(6, 7, dtype=torch.float64)
    for t, target in enumerate(targets, start=1):
        opt.zero_grad()
        ((p - target) ** 2 * torch.arange(1, 8)).sum().backward()
        m, v, d = adam_direction(p.grad, m, v, t, betas, eps)
        theta = theta - 2 * lr * d + lr * last
        last = d
        opt.step()
        assert torch.allclose(p.detach(), theta, rtol=0, atol=1e-12), t


def test_a_reloaded_optimistic_state_continues_the_same_trajectory():
    """The last update is optimizer state: saved and loaded, the run goes on as if never stopped;
    a fresh optimizer (no last update) would not."""
    torch.manual_seed(0)
    cls = optimistic(torch.optim.Adam)
    target = torch.randn(5)

    def steps(p, opt, n):
        for _ in range(n):
            opt.zero_grad()
            ((p - target) ** 2).sum().backward()
            opt.step()

    start = torch.randn(5)
    straight = torch.nn.Parameter(start.clone())
    steps(straight, cls([straight], lr=0.1), 6)
    results = {}
    for reload in (True, False):
        split = torch.nn.Parameter(start.clone())
        opt = cls([split], lr=0.1)
        steps(split, opt, 3)
        fresh = cls([split], lr=0.1)
        if reload:
            fresh.load_state_dict(opt.state_dict())
        steps(split, fresh, 3)
        results[reload] = split.detach()
    assert torch.equal(results[True], straight.detach())
    assert not torch.allclose(results[False], straight.detach())


def test_the_gan_steps_both_players_optimistically_and_fp16_fused_is_refused():
    cfg = quick_config("gan_fashion.yaml", "optim.optimistic=true")
    method = build(cfg, "cpu", info=DataInfo("fashion_mnist", (1, 28, 28), 10))
    opt = method.optimizers["GD"]
    assert isinstance(opt, torch.optim.Adam) and type(opt).__name__ == "OptimisticAdam"
    method.training_step(torch.rand(8, 1, 28, 28) * 2 - 1)
    assert all("last_update" in opt.state[p] for p in method.nets.parameters())
    with pytest.raises(ConfigError, match="^optim.optimistic: fp16's gradient scaler"):
        quick_config("gan_fashion.yaml", "optim.optimistic=true", "optim.fused=true", "precision=fp16")


def test_an_optimistic_gan_run_resumes_bitwise(fashion_root, tmp_path):
    """The checkpoint carries the last update: k steps, stop, resume, k more is the straight run."""
    train_straight_and_resumed("gan_fashion.yaml", [f"data.root={fashion_root}", "optim.optimistic=true",
                                                    "train.ckpt_every=3"], tmp_path, 3)
    assert assert_same_state(tmp_path / "straight", tmp_path / "split")[0] == 6
