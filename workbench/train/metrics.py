"""Per-step metrics summed on the device; epoch means read by the host once per epoch.

So the loop does not stall the GPU: nothing here syncs with the host until
``means``, which (under DDP) also averages over ranks with one all-reduce.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class MetricSums:
    """Sample-weighted sums of metrics, on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, Tensor] = {}

    def add(self, key: str, value: Any, n: int) -> None:
        """sums[key] += value * n (the mean of ``value`` when it is not a scalar), no host sync."""
        if not isinstance(value, Tensor):
            value = torch.tensor(float(value), device=self.device)
        value = value.detach()
        if value.ndim:
            value = value.float().mean()
        if key in self.sums:
            self.sums[key].add_(value, alpha=n)
        else:
            self.sums[key] = value.float() * n

    def means(self, samples: int, world: int) -> dict[str, float]:
        """Means over ``samples`` items (on every rank): one all-reduce under DDP, one host copy."""
        keys = sorted(self.sums)
        count = torch.tensor(float(samples), device=self.device)
        stacked = torch.stack([self.sums[k].to(self.device) for k in keys] + [count])
        if world > 1:
            dist.all_reduce(stacked)
        values = stacked.cpu().tolist()
        total = values[-1] or 1.0
        return {k: v / total for k, v in zip(keys, values[:-1], strict=True)}
