"""Infinite, resumable streams of training batches, float in [−1, 1] on the training device.

Order: epoch e is a permutation drawn from (seed, e), split across ranks by striding, cut into full
batches (the last partial one dropped so every step has one shape). Flips come from the same draw.
The state is just (epoch, position), so a resumed run sees exactly the batches it would have seen.

Two ways to deliver the batches:
- DeviceStream: the whole uint8 set lives on the device; a batch is one index_select plus the
  flip and scaling there, with no workers or host round trips (Fashion-MNIST, CIFAR-10, toys).
- LoaderStream: a DataLoader with workers and pinned memory decodes files (CelebA).
"""
from __future__ import annotations

import torch

from common.errors import DataError
from .base import TensorData, to_unit_range


class EpochSampler:
    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.per_rank = n // world
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise DataError(f"the data set has {n} examples, fewer than one batch of {batch_size} "
                            f"per process ({world} processes): lower train.batch_size")
        self.epoch, self.pos = 0, 0
        self._cache = None

    def order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (indices, flips) for one epoch."""
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g)
            flips = torch.rand(self.n, generator=g) < 0.5
            shard = slice(self.rank, self.per_rank * self.world, self.world)
            self._cache = (epoch, perm[shard], flips[shard])
        return self._cache[1], self._cache[2]

    def current(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx, flips = self.order(self.epoch)
        sl = slice(self.pos * self.batch_size, (self.pos + 1) * self.batch_size)
        return idx[sl], flips[sl]

    def advance(self):
        self.pos += 1
        if self.pos == self.batches_per_epoch:
            self.epoch, self.pos = self.epoch + 1, 0

    def __iter__(self):  # index batches from the current state on, for a DataLoader
        while True:
            yield self.current()[0].tolist()
            self.advance()

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state):
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


def _flip(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    return torch.where(flips.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


class DeviceStream:
    def __init__(self, dataset: TensorData, batch_size, device, flip=False, seed=0, rank=0, world=1):
        self.device = torch.device(device)
        self.data = dataset.data.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.flip = flip and self.data.dim() == 4
        self.sampler = EpochSampler(len(dataset), batch_size, seed, rank, world)
        self._epoch = None

    def __iter__(self):
        return self

    def __next__(self):
        s = self.sampler
        if self._epoch != s.epoch:  # one host→device copy of the order per epoch
            idx, flips = s.order(s.epoch)
            self._idx, self._flips = idx.to(self.device), flips.to(self.device)
            self._epoch = s.epoch
        sl = slice(s.pos * s.batch_size, (s.pos + 1) * s.batch_size)
        idx = self._idx[sl]
        x = to_unit_range(self.data.index_select(0, idx))
        if self.flip:
            x = _flip(x, self._flips[sl])
        s.advance()
        return x, self.labels.index_select(0, idx)

    def state_dict(self):
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state)


class LoaderStream:
    def __init__(self, dataset, batch_size, device, flip=False, seed=0, rank=0, world=1, num_workers=4):
        self.dataset, self.device, self.num_workers = dataset, torch.device(device), num_workers
        self.flip = flip
        self.sampler = EpochSampler(len(dataset), batch_size, seed, rank, world)
        self._it = None

    def _start(self):
        # The loader runs ahead of training, so it gets its own sampler copy; ours counts consumption.
        ahead = EpochSampler(self.sampler.n, self.sampler.batch_size, self.sampler.seed,
                             self.sampler.rank, self.sampler.world)
        ahead.load_state_dict(self.sampler.state_dict())
        workers = self.num_workers
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=ahead, num_workers=workers,
            pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers else None,
            persistent_workers=False)
        self._it = iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            self._start()
        x, y = next(self._it)
        _, flips = self.sampler.current()
        x = to_unit_range(x.to(self.device, non_blocking=True))
        if self.flip and x.dim() == 4:
            x = _flip(x, flips.to(self.device, non_blocking=True))
        self.sampler.advance()
        return x, torch.as_tensor(y).to(self.device, non_blocking=True)

    def state_dict(self):
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state)
        self._it = None  # restart the workers from the restored position
