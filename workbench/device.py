"""Device selection shared by training, embedding export and exact search."""

from __future__ import annotations

import torch

from workbench.errors import ConfigError


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit name must be available."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was asked for but CUDA is not available")
    return dev


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """bf16 autocast on CUDA only (unless fp32 is asked for); None means no autocast."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"precision={precision!r}: expected auto, bf16 or fp32")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.bfloat16
    return None
