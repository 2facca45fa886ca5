"""Distributed data parallel (DDP): set-up, teardown, wrapping, and the model inside wrappers.

Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set), ``fit`` initialises the
process group when needed (nccl on cuda, gloo on cpu), uses ``cuda:LOCAL_RANK``,
wraps the model in ``DistributedDataParallel``, shards the data with a
``DistributedSampler`` (``set_epoch`` every epoch) and averages the epoch metrics
over ranks (one all-reduce per epoch). ``batch_size`` is per process. Each rank
reseeds its global generators from (seed, rank, epoch) at the start of every
epoch, so ranks draw different dropout masks and a resumed DDP run replays them.
Only rank 0 shows progress, runs ``eval_fn`` and writes checkpoints. Set
``ddp_find_unused_parameters=True`` when some parameters get no gradient in a
step (e.g. a tower whose modality is absent from a batch).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, Sampler

from workbench.device import resolve_device
from workbench.train.config import TrainConfig
from workbench.train.rng import seed_everything


@dataclass(frozen=True)
class DDPContext:
    """This process among the training processes; one process alone is rank 0 of 1."""

    rank: int
    world: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that shows progress, evaluates and writes checkpoints."""
        return self.rank == 0


def torchrun_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", "0")))
    return 0, 1, 0


@contextmanager
def distributed(config: TrainConfig) -> Iterator[DDPContext]:
    """This process's rank and device; under DDP, a process group for the ``with`` block.

    A group that already exists is used and left alone; one made here is destroyed
    on leaving the block.
    """
    rank, world, local_rank = torchrun_env()
    if world == 1:
        yield DDPContext(rank, world, resolve_device(config.device))
        return
    if config.device in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = resolve_device("cpu" if config.device == "auto" else config.device)
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield DDPContext(rank, world, device)
    finally:
        if own_group:
            dist.destroy_process_group()


def wrap(module: nn.Module, ddp: DDPContext, find_unused_parameters: bool) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` under DDP, else as it is."""
    if not ddp.enabled:
        return module
    return nn.parallel.DistributedDataParallel(
        module, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters)


def start_epoch(ddp: DDPContext, sampler: Sampler[int], seed: int, epoch: int) -> None:
    """Under DDP: the sampler's shard order for ``epoch`` and this rank's generators reseeded."""
    if not ddp.enabled:
        return
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    seed_everything(seed + 1_000_003 * ddp.rank + 7919 * epoch)


def barrier(ddp: DDPContext) -> None:
    """Wait for every rank (under DDP)."""
    if ddp.enabled:
        dist.barrier()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
