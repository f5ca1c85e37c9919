"""Stop-gradients at a network's parameters: the exact form of the one-loss trick.

`frozen(net)(x)` computes net(x) with every parameter detached (torch.func.functional_call), so a
backward pass through it computes gradients for x and none for the weights: no weight-gradient
kernels run, and nothing reaches the parameters' .grad. The forward is the same computation as
net(x): same weights, same buffers (a training-mode BatchNorm uses, and updates, its own running
statistics); spectral-norm parametrisations see their raw weight detached. It traces into the
caller's graph under torch.compile and reads nothing back to the host.

`split_gradients(net, x)` returns net(x) twice from one forward pass: once as a function of the
weights alone, net(sg(x)), and once as a function of x alone, net_sg(x). The one-loss GAN evaluates
its critic on the fakes exactly so (d_loss on the first, g_loss on the second), and sharing the
forward saves one critic pass per step.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (a pass through it has nothing of its own to synchronise)."""
    return net.module if isinstance(net, DistributedDataParallel) else net


def frozen(net: nn.Module):
    """net's forward with detached parameters."""
    net = unwrap(net)
    params = {name: p.detach() for name, p in net.named_parameters()}
    return lambda *args, **kwargs: torch.func.functional_call(net, params, args, kwargs)


class _SplitGradients(torch.autograd.Function):
    """One forward of net on x, two outputs with its value: the first carries gradients to the
    weights only, the second to x only. The backward walks the network's graph once with each
    output's cotangent, asking autograd for the weights' gradients on the first walk and x's on the
    second, so each walk computes only what its output needs (the first skips ∂/∂x of the input
    layer, the second every weight gradient)."""

    @staticmethod
    def forward(ctx, net, x, labels, *params):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            out = net(x_in) if labels is None else net(x_in, labels)
        ctx.graph = (out, x_in, params)
        return out.detach(), out.detach().clone()

    @staticmethod
    def backward(ctx, cot_weights, cot_input):
        out, x_in, params = ctx.graph
        del ctx.graph
        grads = torch.autograd.grad(out, params, cot_weights, retain_graph=True, allow_unused=True)
        (grad_x,) = torch.autograd.grad(out, x_in, cot_input)
        return (None, grad_x, None, *grads)


def split_gradients(net: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(net(sg(x)), net_sg(x)) from one forward pass (module docstring); net(x, labels) for a
    class-conditional net (labels carry no gradient). Under torch.compile the
    two passes are written out (net on x.detach(), frozen(net) on x), which keeps the traced step
    one graph (the inner autograd.grad calls of the shared pass cannot be traced); the compiled
    graph then runs the critic's forward on the fakes twice."""
    args = () if labels is None else (labels,)
    if torch.compiler.is_compiling():
        return net(x.detach(), *args), frozen(net)(x, *args)
    net = unwrap(net)
    return _SplitGradients.apply(net, x, labels, *[p for p in net.parameters() if p.requires_grad])
