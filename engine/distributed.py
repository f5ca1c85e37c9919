"""Multi-process training with PyTorch's own engine: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK, we
join the process group (NCCL on GPUs, gloo on CPUs) and the method wraps its networks in
DistributedDataParallel. Nothing here averages gradients by hand."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init(device_kind: str) -> Context:
    """Join the process group torchrun describes (once per process); single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Context(rank, world, local)


def all_mean(t: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The mean of `t` over ranks (identity on one process)."""
    if ctx.enabled:
        t = t.clone()
        dist.all_reduce(t)
        t /= ctx.world
    return t


def broadcast_int(value: int, ctx: Context, device) -> int:
    """Rank 0's small integer (a decision code), for every rank (so that all stop at the same step)."""
    return int(broadcast_float(value, ctx, device))


def broadcast_float(value: float, ctx: Context, device) -> float:
    """Rank 0's number, for every rank."""
    if not ctx.enabled:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return t.item()


def gather_objects(obj, ctx: Context) -> list:
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context):
    if ctx.enabled:
        dist.barrier()
