"""The training data: the map-style dataset checked, its sampler and loader, batches on the device.

Loader workers and pinned memory are chosen for the device; every tensor of a
dict batch is copied to the device with ``non_blocking=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from workbench.errors import ConfigError
from workbench.train.config import TrainConfig
from workbench.train.distributed import DDPContext


@dataclass
class TrainData:
    loader: DataLoader[Any]
    sampler: Sampler[int]
    generator: torch.Generator  # the sampler's and the workers' seeds; checkpointed
    steps_per_epoch: int


def dataset_length(dataset: Dataset[Any]) -> int:
    """Items in ``dataset``; ConfigError when it has no length (not map-style) or is empty."""
    if not isinstance(dataset, Sized):
        raise ConfigError(
            f"dataset {type(dataset).__name__} has no length; fit needs a map-style dataset")
    n_items = len(dataset)
    if n_items == 0:
        raise ConfigError(f"dataset {type(dataset).__name__} is empty: nothing to train on")
    return n_items


def build_data(dataset: Dataset[Any], n_items: int, config: TrainConfig, ddp: DDPContext,
               collate_fn: Callable[[list[Any]], Any] | None) -> TrainData:
    """The seeded sampler and the loader over ``dataset`` (``n_items`` long) for this process."""
    generator = torch.Generator()
    generator.manual_seed(config.seed)
    sampler: Sampler[int]
    if ddp.enabled:
        sampler = DistributedSampler(dataset, num_replicas=ddp.world, rank=ddp.rank,
                                     shuffle=config.shuffle, seed=config.seed,
                                     drop_last=config.drop_last)
    # These two samplers read nothing of their source but its length.
    elif config.shuffle:
        sampler = RandomSampler(range(n_items), generator=generator)
    else:
        sampler = SequentialSampler(range(n_items))
    num_workers = (config.num_workers if config.num_workers is not None
                   else default_workers(ddp.device, n_items, ddp.world))
    loader = DataLoader(
        dataset, batch_size=config.batch_size, sampler=sampler, drop_last=config.drop_last,
        num_workers=num_workers, collate_fn=collate_fn, pin_memory=ddp.device.type == "cuda",
        persistent_workers=num_workers > 0, generator=generator,
    )
    if len(loader) == 0:
        raise ConfigError(
            f"dataset {type(dataset).__name__} has {n_items} items, fewer than one batch of "
            f"{config.batch_size} with drop_last=True")
    return TrainData(loader, sampler, generator, len(loader))


def default_workers(device: torch.device, n_items: int, world: int) -> int:
    if device.type != "cuda" or n_items < 1024:
        # In-process loading is cheapest on CPU (workers compete with the model for cores)
        # and for tiny datasets; MPS shares memory with the host anyway.
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(8, cpus // max(1, world) - 1))


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with its tensors (in dicts, lists and tuples of tensors) on ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], (Tensor, Mapping)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def batch_len(batch: Any) -> int:
    """Items in a batch: the first dimension of its first non-empty tensor, or its length."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        for v in batch.values():
            n = batch_len(v)
            if n:
                return n
        return 0
    if isinstance(batch, (list, tuple)):
        return len(batch)
    return 0
