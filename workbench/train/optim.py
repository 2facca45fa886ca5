"""AdamW with a cosine learning-rate schedule after a linear warm-up.

The schedule spans ``epochs * steps_per_epoch`` steps from the start of the run,
so a resumed run follows the same curve as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from workbench.train.config import TrainConfig


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier at each step: linear up to 1, then a cosine down to 0."""
    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


def build_optimizer(params: list[nn.Parameter], config: TrainConfig,
                    total_steps: int) -> tuple[torch.optim.AdamW, LambdaLR]:
    """AdamW over ``params`` and its schedule over ``total_steps``, as ``config`` says."""
    beta1, beta2 = config.betas  # also a list in a config built from JSON
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(beta1, beta2), eps=config.eps,
                                  weight_decay=config.weight_decay)
    warmup_steps = min(total_steps, math.ceil(config.warmup * total_steps)) if config.warmup else 0
    return optimizer, LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps))
