"""Model checkpoints (the format is ``workbench.checkpoint``'s) and fit's epoch checkpoints.

**Checkpoints** (when ``out_dir`` is set) are written after every epoch into
``out_dir/epoch-NNNN/`` (built in a staging folder, then published whole), and
``out_dir/latest.json`` (replaced atomically) names the newest one:

* ``model.safetensors`` + ``model.json`` (``save_checkpoint``): the workbench's one
  checkpoint format (``workbench.checkpoint``), kind ``train_epoch``, whose
  ``extra`` holds epoch, step and the epoch's metrics;
* ``train_state.safetensors`` + ``train_state.json``: optimizer and scheduler
  state flattened into tensors with a JSON index (``workbench.train.state``), the
  RNG states (torch CPU and CUDA, numpy, python ``random``, the sampler's
  generator), the history and the config. No pickle anywhere.

Only the newest ``keep_checkpoints`` epoch folders are kept.
``load_checkpoint(out_dir_or_file, model)`` follows ``latest.json``.

**Resume.** ``resume=True`` continues from ``latest.json`` in ``out_dir`` (or
starts from scratch when there is none). On CPU with ``num_workers=0`` the
resumed run ends with bit-identical weights to an uninterrupted one, provided
the config and dataset are the same: the schedule spans ``epochs`` from the
start, so "train 2 of 4 epochs, then resume to 4" is done with ``stop_after=2``
(or a crash) rather than ``epochs=2`` followed by ``epochs=4`` (allowed, with a
warning, but the learning-rate curve differs). With loader workers, random
augmentations inside workers are not replayed exactly after a resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler

from workbench import checkpoint as ckpt
from workbench.errors import CheckpointError
from workbench.files import save_tensors_atomic, staging_dir, write_json_atomic
from workbench.train.config import TRAJECTORY_FIELDS, TrainConfig
from workbench.train.distributed import unwrap_model
from workbench.train.rng import rng_state, set_rng_state
from workbench.train.state import flatten, unflatten

EPOCH_KIND = "train_epoch"  # the checkpoint kind of fit's epoch folders
TRAIN_STATE_FORMAT = "workbench.train_state/1"
STATE_WEIGHTS_NAME = "train_state.safetensors"
STATE_INDEX_NAME = "train_state.json"
LATEST_NAME = "latest.json"


def save_checkpoint(
    path_dir: str | os.PathLike[str],
    model: nn.Module,
    *,
    model_config: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
    kind: str = EPOCH_KIND,
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``path_dir``; returns ``path_dir``.

    The format is ``workbench.checkpoint`` (weights first, then the JSON, each
    atomically). ``model_config`` (JSON-serialisable) is what a loader needs to
    rebuild the model.
    """
    return ckpt.save_checkpoint(path_dir, unwrap_model(model), kind=kind, model_config=model_config,
                                extra=extra)


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The epoch folder named by ``out_dir/latest.json``, or None when there is none."""
    out_dir = Path(out_dir)
    latest = out_dir / LATEST_NAME
    if not latest.is_file():
        return None
    doc = ckpt.read_json(latest, "latest-checkpoint pointer")
    if not isinstance(doc.get("dir"), str):
        raise CheckpointError(f"{latest}: expected JSON with a 'dir' entry")
    folder = out_dir / doc["dir"]
    if not (folder / ckpt.WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{latest} names {folder}, which has no {ckpt.WEIGHTS_FILE}")
    return folder


def checkpoint_folder(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder for a checkpoint folder, a training out_dir or a file inside one."""
    path = Path(path)
    if path.is_dir():
        folder = path if (path / ckpt.WEIGHTS_FILE).is_file() else latest_checkpoint(path)
        if folder is None:
            raise CheckpointError(
                f"{path}: no {ckpt.WEIGHTS_FILE} and no {LATEST_NAME}; expected a folder written by "
                "save_checkpoint or a training out_dir written by fit")
        return folder
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.name not in (ckpt.WEIGHTS_FILE, ckpt.DOC_FILE):
        raise CheckpointError(
            f"{path}: expected a checkpoint folder, its {ckpt.WEIGHTS_FILE} or its {ckpt.DOC_FILE}")
    return path.parent


def load_checkpoint(
    path: str | os.PathLike[str], model: nn.Module | None = None, *, strict: bool = True
) -> dict[str, Any]:
    """Read a checkpoint; load its weights into ``model`` when given; return its JSON document.

    ``path`` is a folder written by ``save_checkpoint``, a training ``out_dir``
    (follows ``latest.json``) or the ``model.safetensors`` / ``model.json`` of a
    checkpoint. The returned dict holds ``kind``, ``model_config`` (what the model
    was built from) and ``extra``. Raises CheckpointError for a missing file, a
    file that is not safetensors or is truncated, and tensors whose names or
    shapes do not match the model (``strict=False`` loads the tensors that fit).
    """
    folder = checkpoint_folder(path)
    tensors, doc = ckpt.read_checkpoint(folder)
    if model is not None:
        ckpt.load_into(unwrap_model(model), tensors, folder / ckpt.WEIGHTS_FILE,
                       aliases=doc["aliases"], strict=strict)
    return doc


# ---------------------------------------------------------------------------
# fit's epoch checkpoints
# ---------------------------------------------------------------------------


@dataclass
class RunState:
    """Where a run stands: its last finished epoch, optimizer steps so far, records, checkpoint."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    checkpoint: Path | None = None  # the newest epoch folder

    def add(self, record: dict[str, Any]) -> None:
        """Count a finished epoch, described by its record."""
        self.history.append(record)
        self.epoch, self.step = record["epoch"], record["step"]


@dataclass
class TrainingState:
    """What an epoch checkpoint holds besides the model (and a resume restores)."""

    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    sampler_generator: torch.Generator


def epoch_folder(out_dir: Path, epoch: int) -> Path:
    return out_dir / f"epoch-{epoch:04d}"


def save_epoch(out_dir: Path, run: RunState, model: nn.Module, model_config: Mapping[str, Any] | None,
               state: TrainingState, config: TrainConfig, *, total_steps: int, n_items: int,
               world: int) -> Path:
    """Publish ``out_dir/epoch-NNNN`` for ``run``'s last epoch, point ``latest.json`` at it and
    drop older folders beyond ``config.keep_checkpoints``; returns the folder."""
    record = run.history[-1]
    state_tensors: dict[str, Tensor] = {}
    state_doc = {
        "format": TRAIN_STATE_FORMAT,
        "epoch": run.epoch,
        "step": run.step,
        "total_steps": total_steps,
        "dataset_len": n_items,
        "world_size": world,
        "config": _jsonish(dataclasses.asdict(config)),
        "history": _jsonish(run.history),
        "optimizer": flatten(state.optimizer.state_dict(), "optimizer", state_tensors),
        "scheduler": flatten(state.scheduler.state_dict(), "scheduler", state_tensors),
        "rng": flatten(rng_state(state.sampler_generator), "rng", state_tensors),
    }
    final = epoch_folder(out_dir, run.epoch)
    # Built in a staging folder and published whole (replacing a previous, non-resumed
    # run's folder of the same name), then latest.json points at it.
    with staging_dir(final) as st:
        save_checkpoint(st.path, model, model_config=model_config,
                        extra={"epoch": run.epoch, "step": run.step, "metrics": _jsonish(record)})
        save_tensors_atomic(st.path / STATE_WEIGHTS_NAME, state_tensors, {"format": "pt"})
        write_json_atomic(st.path / STATE_INDEX_NAME, state_doc)
        st.publish()
    write_json_atomic(out_dir / LATEST_NAME, {"dir": final.name, "epoch": run.epoch, "step": run.step})
    # Older epoch folders (this run's or a previous run's) go once the new one is in place.
    for old in sorted(out_dir.glob("epoch-*")):
        if old.is_dir() and old.name != final.name:
            try:
                old_epoch = int(old.name.split("-", 1)[1])
            except ValueError:
                continue
            if old_epoch > run.epoch or old_epoch <= run.epoch - config.keep_checkpoints:
                shutil.rmtree(old, ignore_errors=True)
    return final


def resume(folder: Path, model: nn.Module, state: TrainingState, config: TrainConfig,
           n_items: int) -> RunState:
    """Load the epoch checkpoint ``folder`` into ``model`` and ``state``; the run it ended.

    Warns when settings that shape the trajectory (or the dataset's length) changed.
    """
    load_checkpoint(folder, model)
    state_doc = ckpt.read_json(folder / STATE_INDEX_NAME, "training state")
    state_tensors = ckpt.read_tensors(folder / STATE_WEIGHTS_NAME, "training state")
    if state_doc.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{folder / STATE_INDEX_NAME}: format "
                              f"{state_doc.get('format')!r}, expected {TRAIN_STATE_FORMAT!r}")
    try:
        state.optimizer.load_state_dict(unflatten(state_doc["optimizer"], state_tensors))
        state.scheduler.load_state_dict(unflatten(state_doc["scheduler"], state_tensors))
        rng = unflatten(state_doc["rng"], state_tensors)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{folder}: training state does not fit this model/optimizer: {exc}") from exc
    _warn_on_changed_settings(state_doc.get("config", {}), config, n_items,
                              state_doc.get("dataset_len"), folder)
    # The scheduler keeps this call's lambda (over this call's total steps): a longer
    # run stretches the cosine from the step reached; load_state_dict leaves it alone.
    set_rng_state(rng, state.sampler_generator)
    return RunState(epoch=int(state_doc["epoch"]), step=int(state_doc["step"]),
                    history=list(state_doc.get("history", [])), checkpoint=folder)


def _warn_on_changed_settings(saved: Mapping[str, Any], config: TrainConfig, n_items: int,
                              saved_items: int | None, where: Path) -> None:
    now = dataclasses.asdict(config)
    changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in TRAJECTORY_FIELDS
               if k in saved and _jsonish(saved[k]) != _jsonish(now[k])]
    if saved_items is not None and saved_items != n_items:
        changed.append(f"dataset length: {saved_items} -> {n_items}")
    if changed:
        warnings.warn(
            f"resuming from {where} with changed settings ({'; '.join(changed)}); the "
            "checkpoint's optimizer settings (lr, betas, weight decay) are kept, the schedule "
            "spans the new total of steps, and the result will not match an uninterrupted run",
            stacklevel=5)  # fit's caller: here <- resume <- fit's set-up helper <- fit


def _jsonish(v: Any) -> Any:
    """JSON types only (tuples become lists), NaN as None: what the JSON files can hold."""
    return ckpt.json_safe(json.loads(json.dumps(v)))
