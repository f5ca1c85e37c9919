"""CUDA-graph capture of fixed-shape work (torch.cuda.graph). A training step at small batch is
launch-bound: hundreds of small kernels, each costing more to launch than to run. Captured once, the
whole step (forward, backward, optimizer step, EMA update) replays as one graph launch.

Requirements the callers meet: fixed shapes, no host syncs inside the step, optimizers built with
capturable=True, randomness from the device's generator (or generators registered with the graph).
"""
from __future__ import annotations

import torch


def _warm_up(fn, *args, iters: int = 3):
    """Run on a side stream first, as capture requires (lazy inits, cuDNN autotuning, allocations)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(iters):
            out = fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    return out


class GraphedStep:
    """step(x[, labels]) -> stats, replayed as one CUDA graph. The first `warmup` calls run eagerly
    (they are real training steps), the next one is captured, then every call copies the batch (and
    its labels) into the static inputs and replays. Returned stats are the graph's static outputs:
    read or copy them before the next call."""

    def __init__(self, step, warmup: int = 3):
        self.step, self.warmup, self.calls = step, warmup, 0
        self.graph = self.static_in = self.static_out = None

    def __call__(self, *inputs: torch.Tensor):
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            return _warm_up(self.step, *inputs, iters=1)
        if self.graph is None:
            self.static_in = [t.clone() for t in inputs]
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_out = self.step(*self.static_in)
        else:
            for static, t in zip(self.static_in, inputs, strict=True):
                static.copy_(t)
        self.graph.replay()
        return self.static_out


class Graphed:
    """fn() over fixed tensors, captured once (after a side-stream warm-up that runs it for real)
    and replayed by each call; returns fn's static output. Generators other than the device's
    default one must be registered."""

    def __init__(self, fn, generator=None, warmup: int = 3):
        self.fn = fn
        _warm_up(fn, iters=warmup)
        self.graph = torch.cuda.CUDAGraph()
        if generator is not None:
            self.graph.register_generator_state(generator)
        with torch.cuda.graph(self.graph):
            self.out = fn()

    def __call__(self):
        self.graph.replay()
        return self.out


class GraphedInPlace:
    """x ← fn(x, *params) in place as one captured graph; params are 0-dim device tensors that the
    caller fills before each replay (e.g. σ and the step size of a Langevin step). Off CUDA (or
    with capture=False) the same parametrised step runs eagerly, so that path is testable on a CPU."""

    def __init__(self, fn, x: torch.Tensor, *params: torch.Tensor, generator=None, capture: bool | None = None):
        self.x, self.params = x, params
        step = lambda: self.x.copy_(fn(self.x, *self.params))
        if (x.is_cuda if capture is None else capture):
            # The warm-up steps must not count: x and the random stream are put back, so the
            # replays draw what the eager loop would have drawn.
            stream = generator if generator is not None else torch.cuda.default_generators[x.device.index]
            snapshot, rng = x.clone(), stream.get_state()
            self.run = Graphed(step, generator)
            self.x.copy_(snapshot)
            stream.set_state(rng)
        else:
            self.run = step

    def __call__(self, *values):
        for p, v in zip(self.params, values):
            p.fill_(v)
        return self.run()
