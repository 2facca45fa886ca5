"""The global random generators: seeding, and their state for checkpoints.

``fit`` seeds torch (CPU and CUDA), numpy and python ``random`` at the start of a
fresh run, because tasks commonly draw negatives from those generators; the
checkpoints keep their states (and the sampler's generator) so a resume replays them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from workbench.errors import CheckpointError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state(sampler_generator: torch.Generator) -> dict[str, Any]:
    """The states of every generator a training step may draw from."""
    np_state = np.random.get_state()
    if isinstance(np_state, dict):  # after np.random.set_bit_generator with another kind
        raise CheckpointError(
            f"cannot store numpy's global generator, a {np_state.get('bit_generator')}, in a "
            "checkpoint: expected MT19937")
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "sampler": sampler_generator.get_state(),
        "numpy": (np_state[0], np_state[1], int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "python": (py_state[0], torch.tensor(py_state[1], dtype=torch.int64), py_state[2]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any], sampler_generator: torch.Generator) -> None:
    """Restore what ``rng_state`` returned (CUDA states only onto as many devices)."""
    torch.set_rng_state(state["torch"])
    sampler_generator.set_state(state["sampler"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
