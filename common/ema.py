"""The exponential moving average of a network's weights, which samples come from.

W_ema <- d_t W_ema + (1 − d_t) W, with a warm-up of the decay d_t, buffers copied, and BatchNorm
statistics recomputed for the averaged weights before sampling ("standing statistics").
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn


def ema_decay(decay: float, updates: torch.Tensor, warmup: bool = True) -> torch.Tensor:
    """The decay of update number `updates` (0, 1, ...): min(decay, (1 + t)/(10 + t)) with warm-up
    (TensorFlow's ExponentialMovingAverage with num_updates), else `decay`. Early averages then
    forget the random initialisation: at t = 0 the average is 90% the trained weights, and the
    warm-up ends when (1 + t)/(10 + t) reaches `decay` (t = 890 for 0.99, 8990 for 0.999)."""
    t = updates.to(torch.float32)
    ramp = (1 + t) / (10 + t) if warmup else torch.ones_like(t)
    return torch.clamp(ramp, max=decay)


def halflife_decay(updates: torch.Tensor, batch_images: int, halflife_images: float,
                   rampup: float | None = None) -> torch.Tensor:
    """EDM's decay of update number `updates` (0, 1, ...) when each update follows `batch_images`
    training images: β = 0.5^(batch / h), so that the average forgets half of any weight after h
    images whatever the batch size, with h = min(halflife, rampup × images seen before the update)
    under a ramp-up (h = 0 at the first update: β = 0, the average starts as the weights)."""
    seen = updates.to(torch.float64) * batch_images
    h = torch.full_like(seen, float(halflife_images))
    if rampup is not None:
        h = torch.minimum(h, seen * rampup)
    return torch.pow(0.5, batch_images / h.clamp(min=1e-8))  # float64: 1 − β is ~1e-5 and must keep its digits


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
STANDING_SAMPLES = 4000  # latents whose activations give an averaged generator's BatchNorm statistics


class EMA(AveragedModel):
    """torch's AveragedModel (same state: module.*, n_averaged) with an update that never syncs
    with the device, a warm-up, and buffers copied rather than averaged.

    W_ema <- d_t W_ema + (1 − d_t) W with d_t = ema_decay(decay, t): one foreach lerp whose weight
    is a device tensor, so a captured CUDA graph replays the schedule too. AveragedModel.update_parameters
    reads its step counter on the host every call, which would stall the stream each step.
    Buffers (BatchNorm running statistics) are copied, as EDM, StyleGAN and StudioGAN do: an
    average would carry d^t of the initial running_var (1.0, against true variances ~0.005 for
    a DCGAN generator at N(0, 0.02) init) for thousands of steps.
    """

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True, halflife: tuple | None = None):
        """`halflife`: (batch_images, halflife_images, rampup) for EDM's decay (halflife_decay),
        which then replaces `decay` and `warmup`."""
        super().__init__(module, use_buffers=True)
        self.decay, self.warmup, self.halflife = decay, warmup, halflife
        # AveragedModel makes its update counter on the CPU: keep it beside the weights, so that a
        # captured CUDA graph counts its replays too.
        self.n_averaged = self.n_averaged.to(next(module.parameters()).device)
        self.eval()  # the average is only ever evaluated: dropout off (update_bn trains BatchNorm itself)

    def current_decay(self) -> torch.Tensor:
        if self.halflife is not None:
            return halflife_decay(self.n_averaged, *self.halflife)
        return ema_decay(self.decay, self.n_averaged, self.warmup)

    @torch.no_grad()
    def standing_statistics(self, batches) -> bool:
        """Recompute the average's BatchNorm statistics for its own weights (BigGAN's standing
        statistics; torch's update_bn: one pass in training mode, exact averages) from `batches`
        of inputs, once per set of weights. The copied statistics belong to the trained weights,
        which the average lags behind: after 2,000 DCGAN steps at decay 0.999 they were 107% off in
        variance. Returns whether it recomputed."""
        if not any(isinstance(m, BATCH_NORMS) for m in self.module.modules()):
            return False
        version = int(self.n_averaged)
        if getattr(self, "_statistics_of", None) == version:
            return False
        # a batch is the network's input, or a tuple of its inputs (latents and labels), which
        # update_bn would cut to the first: each goes in a one-item list that it unpacks
        update_bn(([inputs] for inputs in batches()), _Unpack(self.module))
        self._statistics_of = version
        return True

    @torch.no_grad()
    def update_parameters(self, model: nn.Module):
        params = list(self.module.parameters())
        if params:
            weight = (1 - self.current_decay().double()).to(params[0].dtype)  # 1 − β in float64, then cast
            torch._foreach_lerp_(params, [p.detach() for p in model.parameters()], [weight] * len(params))
        for avg, cur in zip(self.module.buffers(), model.buffers(), strict=True):
            avg.copy_(cur)
        self.n_averaged += 1


class _Unpack(nn.Module):
    """module(*inputs) for a tuple of inputs, module(inputs) for one."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, inputs):
        return self.module(*inputs) if isinstance(inputs, tuple) else self.module(inputs)
