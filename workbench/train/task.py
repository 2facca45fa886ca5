"""The task protocol (a task owns the loss) and the module that runs it for the loop.

**The task always receives the plain model**, never a wrapper: under DDP, ``fit``
wraps ``TaskModule``, whose forward calls ``task.loss(model, batch)``, so a task
may call any method of the model (``model.encode_text(...)``) and gradients are
still synchronised. Two rules follow: every trainable parameter must live in the
model (a learnable temperature belongs to the model, not the task; a task holding
trainable parameters is refused), and a task should not keep references to
tensors between calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torch import Tensor, nn

from workbench.errors import ConfigError


class Task(Protocol):
    """Owns the loss. ``loss`` returns scalar tensors; "loss" is optimised, the rest logged."""

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]: ...


class TaskModule(nn.Module):
    """Runs the task inside ``forward`` so DDP sees the whole loss computation."""

    def __init__(self, model: nn.Module, task: Task):
        super().__init__()
        self.model = model
        self.task = task  # not a submodule: check_task refuses one with parameters

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self.task.loss(self.model, batch)


def check_task(task: Task) -> None:
    """ConfigError for a task without a ``loss`` method or holding trainable parameters."""
    if not hasattr(task, "loss") or not callable(task.loss):
        raise ConfigError(f"task {type(task).__name__} has no loss(model, batch) method")
    if isinstance(task, nn.Module) and any(p.requires_grad for p in task.parameters()):
        raise ConfigError(
            f"task {type(task).__name__} holds trainable parameters; put them in the model "
            "(fit optimises and checkpoints the model's parameters only)")


def checked_loss(out: Any, task: Task) -> Tensor:
    """The "loss" entry of what ``task.loss`` returned; ConfigError when there is none."""
    if not isinstance(out, Mapping) or "loss" not in out:
        raise ConfigError(
            f"{type(task).__name__}.loss returned {type(out).__name__} "
            f"{sorted(out) if isinstance(out, Mapping) else ''}; expected a dict with 'loss'")
    return out["loss"]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters ``fit`` optimises; ConfigError when there are none."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(
            f"model {type(model).__name__} has no trainable parameters (all frozen or none); "
            "nothing for fit to train")
    return params
