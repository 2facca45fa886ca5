"""``fit``: the training loop, with its set-up in small helpers and one epoch per call."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from workbench.device import autocast_dtype
from workbench.progress import progress_bar
from workbench.train.checkpoints import (
    RunState,
    TrainingState,
    epoch_folder,
    latest_checkpoint,
    resume,
    save_epoch,
)
from workbench.train.config import TrainConfig
from workbench.train.data import TrainData, batch_len, build_data, dataset_length, to_device
from workbench.train.distributed import (
    DDPContext,
    barrier,
    distributed,
    start_epoch,
    unwrap_model,
    wrap,
)
from workbench.train.metrics import MetricSums
from workbench.train.optim import build_optimizer
from workbench.train.rng import seed_everything
from workbench.train.task import Task, TaskModule, check_task, checked_loss, trainable_parameters


@dataclass
class TrainResult:
    history: list[dict[str, Any]]  # one record per epoch (also in the checkpoints)
    checkpoint: Path | None  # the newest epoch folder, or None without out_dir
    model: nn.Module  # the trained (unwrapped) model, on the training device
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def fit(
    model: nn.Module,
    task: Task,
    dataset: Dataset[Any],
    config: TrainConfig,
    *,
    model_config: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    collate_fn: Callable[[list[Any]], Any] | None = None,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``task.loss``; see ``workbench.train``.

    ``callbacks`` are called once per epoch, after the checkpoint is written, with
    a copy of the epoch record: ``epoch`` (1-based), ``step`` (optimizer steps so
    far), ``loss`` and the task's other metrics (sample-weighted epoch means),
    ``grad_norm`` (mean pre-clipping norm), ``lr`` (of the epoch's last step),
    ``samples_per_s``, ``data_wait_s`` (time the loop waited for the loader),
    ``wall_s`` (the epoch's training time), and what ``eval_fn`` returns (called on
    the unwrapped model in eval mode; a key clashing with a training metric gets an
    ``eval_`` prefix) plus ``eval_s``.
    """
    model, params, n_items = _checked_inputs(model, task, dataset, config)
    with distributed(config) as ddp:
        out_dir = _out_dir(config, ddp)
        data = build_data(dataset, n_items, config, ddp, collate_fn)
        model.to(ddp.device)
        total_steps = data.steps_per_epoch * config.epochs
        optimizer, scheduler = build_optimizer(params, config, total_steps)
        state = TrainingState(optimizer, scheduler, data.generator)
        run = _start_run(config, out_dir, model, state, n_items)
        if run.epoch >= config.last_epoch:  # resumed a run that is already done
            return TrainResult(run.history, run.checkpoint, model, ddp.device)

        train_module = wrap(TaskModule(model, task), ddp, config.ddp_find_unused_parameters)
        for epoch in range(run.epoch + 1, config.last_epoch + 1):
            start_epoch(ddp, data.sampler, config.seed, epoch)
            model.train()
            record = _train_epoch(train_module, task, data, state, params, ddp, config, epoch,
                                  run.step)
            if eval_fn is not None and ddp.is_main:
                _evaluate(model, eval_fn, record)
            run.add(record)
            if out_dir is not None and ddp.is_main:
                run.checkpoint = save_epoch(out_dir, run, model, model_config, state, config,
                                            total_steps=total_steps, n_items=n_items,
                                            world=ddp.world)
            barrier(ddp)  # the checkpoint is on disk before any rank moves on
            if out_dir is not None and not ddp.is_main:
                run.checkpoint = epoch_folder(out_dir, epoch)
            for callback in callbacks:
                callback(dict(record))
    return TrainResult(run.history, run.checkpoint, model, ddp.device)


# ---------------------------------------------------------------------------
# set-up
# ---------------------------------------------------------------------------


def _checked_inputs(model: nn.Module, task: Task, dataset: Dataset[Any],
                    config: TrainConfig) -> tuple[nn.Module, list[nn.Parameter], int]:
    """The plain model, its trainable parameters and the dataset's length.

    ConfigError for what fit cannot train with, naming it.
    """
    config.validate()  # again: fields may have been assigned since construction
    check_task(task)
    model = unwrap_model(model)
    return model, trainable_parameters(model), dataset_length(dataset)


def _out_dir(config: TrainConfig, ddp: DDPContext) -> Path | None:
    """The checkpoint folder (made by rank 0), or None without ``out_dir``."""
    if config.out_dir is None:
        return None
    out_dir = Path(config.out_dir)
    if ddp.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _start_run(config: TrainConfig, out_dir: Path | None, model: nn.Module, state: TrainingState,
               n_items: int) -> RunState:
    """The run resumed from the newest epoch checkpoint (``config.resume``), or a fresh run
    with every global generator seeded."""
    folder = latest_checkpoint(out_dir) if config.resume and out_dir is not None else None
    if folder is None:
        seed_everything(config.seed)
        return RunState()
    return resume(folder, model, state, config, n_items)


# ---------------------------------------------------------------------------
# one epoch, and evaluation after it
# ---------------------------------------------------------------------------


def _train_epoch(train_module: nn.Module, task: Task, data: TrainData, state: TrainingState,
                 params: list[nn.Parameter], ddp: DDPContext, config: TrainConfig, epoch: int,
                 step: int) -> dict[str, Any]:
    """One pass over the data from optimizer step ``step``; the epoch's record (see ``fit``).

    Metrics are summed on the device and read once at the end; the progress bar
    reads the loss every ``log_every`` steps.
    """
    device = ddp.device
    amp_dtype = autocast_dtype(device, config.precision)
    show = config.progress and ddp.is_main
    sums = MetricSums(device)
    samples, data_wait = 0, 0.0
    lr_used = state.optimizer.param_groups[0]["lr"]
    t_start = time.perf_counter()
    bar = progress_bar(total=data.steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}",
                       enabled=show, leave=False, dynamic_ncols=True)
    try:
        for i, (batch, wait) in enumerate(_timed(data.loader), start=1):
            data_wait += wait
            n = batch_len(batch)
            batch = to_device(batch, device)
            with _autocast(device, amp_dtype):
                out = train_module(batch)
            loss = checked_loss(out, task)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                sums.add("grad_norm", nn.utils.clip_grad_norm_(params, config.grad_clip), n)
            lr_used = state.optimizer.param_groups[0]["lr"]
            state.optimizer.step()
            state.scheduler.step()
            step += 1
            samples += n
            for key, value in out.items():
                if key == "grad_norm" and config.grad_clip is not None:
                    key = "task_grad_norm"  # the loop's own grad_norm keeps its name
                sums.add(key, value, n)
            if show:
                bar.update(1)
                if i % config.log_every == 0 or i == data.steps_per_epoch:
                    # the only host sync inside the epoch, once every log_every steps
                    bar.set_postfix(loss=f"{loss.detach().float().item():.4f}")
    finally:
        bar.close()
    means = sums.means(samples, ddp.world)  # syncs the device once
    wall = time.perf_counter() - t_start
    record: dict[str, Any] = {
        "epoch": epoch, "step": step, **means,
        "lr": lr_used,
        "samples_per_s": samples * ddp.world / wall if wall > 0 else float("nan"),
        "data_wait_s": data_wait,
        "wall_s": wall,
    }
    if not math.isfinite(record.get("loss", 0.0)):
        warnings.warn(f"epoch {epoch}: mean loss is {record['loss']}", stacklevel=3)
    return record


def _timed(loader: DataLoader[Any]) -> Iterator[tuple[Any, float]]:
    """The loader's batches, each with the seconds the loop waited for it."""
    batches = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        yield batch, time.perf_counter() - t0


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> torch.autocast:
    """bf16 autocast on CUDA (``autocast_dtype``); elsewhere autocast off, even inside a caller's."""
    return torch.autocast(device_type=device.type, dtype=amp_dtype or torch.bfloat16,
                          enabled=amp_dtype is not None)


@torch.no_grad()
def _evaluate(model: nn.Module, eval_fn: Callable[[nn.Module], Mapping[str, float]],
              record: dict[str, Any]) -> None:
    """Add what ``eval_fn`` returns for ``model`` in eval mode, and ``eval_s``, to ``record``."""
    t0 = time.perf_counter()
    model.eval()
    results = eval_fn(model)
    model.train()
    for key, value in dict(results).items():
        value = float(value) if isinstance(value, (int, float, np.number)) else value
        record[f"eval_{key}" if key in record else key] = value  # a clash gets the prefix
    record["eval_s"] = time.perf_counter() - t0
