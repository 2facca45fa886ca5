"""The one training loop shared by every model of the workbench.

Models return embeddings or scores; a *task* object owns the loss::

    class MyTask:
        def loss(self, model, batch):            # batch: dict of tensors already on the device
            scores = model(batch["x"])
            loss = F.cross_entropy(scores, batch["y"])
            return {"loss": loss, "acc": (scores.argmax(1) == batch["y"]).float().mean()}

    result = fit(model, MyTask(), dataset, TrainConfig(epochs=5, out_dir="work/enc"),
                 model_config={"d": 256}, callbacks=[lambda rec: print(rec["loss"])])

What ``fit`` does, in order: picks the device (``workbench.device.resolve_device``:
cuda, then mps, then cpu), moves the model there, builds AdamW and a cosine
schedule with linear warm-up over ``epochs * steps_per_epoch`` steps, then for
each epoch iterates a ``DataLoader`` (workers and pinned memory chosen for the
device), copies every tensor of the dict batch to the device with
``non_blocking=True``, runs ``task.loss`` under bf16 autocast on cuda only,
back-propagates, clips the gradient norm and steps. Per-step metrics are summed
on the device; the host reads them once per epoch (and the progress bar reads
the loss every ``log_every`` steps), so the loop does not stall the GPU.

**The task always receives the plain model**, never a wrapper: under DDP, ``fit``
wraps a small module that calls ``task.loss(model, batch)`` inside its forward,
so a task may call any method of the model (``model.encode_text(...)``) and
gradients are still synchronised. Two rules follow: every trainable parameter
must live in the model (a learnable temperature belongs to the model, not the
task; a task holding trainable parameters is refused), and a task should not
keep references to tensors between calls. ``unwrap_model`` is exported for code
outside ``fit`` that may receive a DDP-wrapped model.

**Checkpoints** (when ``out_dir`` is set) are written after every epoch into
``out_dir/epoch-NNNN/`` (built in a staging folder, then published whole), and
``out_dir/latest.json`` (replaced atomically) names the newest one:

* ``model.safetensors`` + ``model.json`` (``save_checkpoint``): the workbench's one
  checkpoint format (``workbench.checkpoint``), kind ``train_epoch``, whose
  ``extra`` holds epoch, step and the epoch's metrics;
* ``train_state.safetensors`` + ``train_state.json``: optimizer and scheduler
  state flattened into tensors with a JSON index, the RNG states (torch CPU and
  CUDA, numpy, python ``random``, the sampler's generator), the history and the
  config. No pickle anywhere.

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

``fit`` seeds torch (CPU and CUDA), numpy and python ``random`` with
``config.seed`` at the start of a fresh run, because tasks commonly draw
negatives from those generators.

**DDP.** Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set), ``fit`` initialises
the process group when needed (nccl on cuda, gloo on cpu), uses
``cuda:LOCAL_RANK``, wraps the model in ``DistributedDataParallel``, shards the
data with a ``DistributedSampler`` (``set_epoch`` every epoch) and averages the
epoch metrics over ranks (one all-reduce per epoch). ``batch_size`` is per
process. Each rank reseeds its global generators from (seed, rank, epoch) at the
start of every epoch, so ranks draw different dropout masks and a resumed DDP run
replays them. Only rank 0 shows progress, runs ``eval_fn`` and writes
checkpoints. Set ``ddp_find_unused_parameters=True`` when some parameters get no
gradient in a step (e.g. a tower whose modality is absent from a batch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
)

from workbench import checkpoint as ckpt
from workbench.device import autocast_dtype, resolve_device
from workbench.errors import CheckpointError, ConfigError
from workbench.files import save_tensors_atomic, staging_dir, write_json_atomic
from workbench.progress import progress_bar

__all__ = [
    "Task",
    "TrainConfig",
    "TrainResult",
    "fit",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "unwrap_model",
]

EPOCH_KIND = "train_epoch"  # the checkpoint kind of fit's epoch folders
TRAIN_STATE_FORMAT = "workbench.train_state/1"
STATE_WEIGHTS_NAME = "train_state.safetensors"
STATE_INDEX_NAME = "train_state.json"
LATEST_NAME = "latest.json"

# Config fields that shape the optimisation trajectory: a resume that changes one
# of them cannot reproduce the uninterrupted run, so it is warned about.
_TRAJECTORY_FIELDS = (
    "epochs", "batch_size", "lr", "weight_decay", "warmup", "grad_clip", "seed", "shuffle",
    "drop_last", "betas", "eps", "precision",
)


@dataclass
class TrainConfig:
    """Settings of one ``fit`` call (see the module docstring for the behaviour)."""

    epochs: int = 10
    batch_size: int = 256  # per process under DDP
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.05  # fraction of total steps with a linear warm-up
    grad_clip: float | None = 1.0  # max gradient norm; None disables clipping
    device: str = "auto"  # cuda, then mps, then cpu
    precision: str = "auto"  # bf16 autocast on cuda only; "fp32" disables it
    seed: int = 0
    out_dir: str | None = None  # checkpoints each epoch, atomically
    resume: bool = False
    num_workers: int | None = None  # None: chosen for the device
    progress: bool = True
    shuffle: bool = True
    drop_last: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    log_every: int = 20  # steps between progress-bar loss updates (one host sync each)
    keep_checkpoints: int = 1  # newest epoch folders kept in out_dir
    stop_after: int | None = None  # stop this call after this epoch (schedule still spans `epochs`)
    ddp_find_unused_parameters: bool = False

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work, naming the field."""
        if self.epochs < 0:
            raise ConfigError(f"TrainConfig.epochs={self.epochs}: expected >= 0")
        if self.batch_size < 1:
            raise ConfigError(f"TrainConfig.batch_size={self.batch_size}: expected >= 1")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr={self.lr}: expected > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"TrainConfig.weight_decay={self.weight_decay}: expected >= 0")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"TrainConfig.warmup={self.warmup}: expected a fraction in [0, 1)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"TrainConfig.grad_clip={self.grad_clip}: expected > 0 or None")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"TrainConfig.num_workers={self.num_workers}: expected >= 0 or None")
        if self.log_every < 1:
            raise ConfigError(f"TrainConfig.log_every={self.log_every}: expected >= 1")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"TrainConfig.keep_checkpoints={self.keep_checkpoints}: expected >= 1")
        if self.stop_after is not None and self.stop_after < 1:
            raise ConfigError(f"TrainConfig.stop_after={self.stop_after}: expected >= 1 or None")
        if self.resume and self.out_dir is None:
            raise ConfigError("TrainConfig.resume=True needs out_dir (where the checkpoints are)")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"TrainConfig.precision={self.precision!r}: expected auto, bf16 or fp32")


class Task(Protocol):
    """Owns the loss. ``loss`` returns scalar tensors; "loss" is optimised, the rest logged."""

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]: ...


@dataclass
class TrainResult:
    history: list[dict[str, Any]]  # one record per epoch (also in the checkpoints)
    checkpoint: Path | None  # the newest epoch folder, or None without out_dir
    model: nn.Module  # the trained (unwrapped) model, on the training device
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


# ---------------------------------------------------------------------------
# model checkpoints (the format is workbench.checkpoint's)
# ---------------------------------------------------------------------------


def save_checkpoint(
    path_dir: str | os.PathLike,
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


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
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


def _checkpoint_folder(path: str | os.PathLike) -> Path:
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
    path: str | os.PathLike, model: nn.Module | None = None, *, strict: bool = True
) -> dict[str, Any]:
    """Read a checkpoint; load its weights into ``model`` when given; return its JSON document.

    ``path`` is a folder written by ``save_checkpoint``, a training ``out_dir``
    (follows ``latest.json``) or the ``model.safetensors`` / ``model.json`` of a
    checkpoint. The returned dict holds ``kind``, ``model_config`` (what the model
    was built from) and ``extra``. Raises CheckpointError for a missing file, a
    file that is not safetensors or is truncated, and tensors whose names or
    shapes do not match the model (``strict=False`` loads the tensors that fit).
    """
    folder = _checkpoint_folder(path)
    tensors, doc = ckpt.read_checkpoint(folder)
    if model is not None:
        ckpt.load_into(unwrap_model(model), tensors, folder / ckpt.WEIGHTS_FILE,
                       aliases=doc["aliases"], strict=strict)
    return doc


# ---------------------------------------------------------------------------
# flattening nested state (optimizer, scheduler, RNG) into tensors + JSON
# ---------------------------------------------------------------------------


def _flatten(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, np.ndarray):
        tensors[prefix] = torch.from_numpy(np.ascontiguousarray(obj)).clone()
        return {"__ndarray__": prefix}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _flatten(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store {prefix} of type {type(obj).__name__} in a checkpoint")


def _unflatten(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def _rng_state(sampler_gen: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "sampler": sampler_gen.get_state(),
        "numpy": (np_state[0], np_state[1], int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "python": (py_state[0], torch.tensor(py_state[1], dtype=torch.int64), py_state[2]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: Mapping[str, Any], sampler_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    sampler_gen.set_state(state["sampler"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------


class _TaskModule(nn.Module):
    """Runs the task inside ``forward`` so DDP sees the whole loss computation."""

    def __init__(self, model: nn.Module, task: Task):
        super().__init__()
        self.model = model
        self.task = task  # not a submodule: refused if it has parameters

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self.task.loss(self.model, batch)


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and obj and isinstance(obj[0], (Tensor, Mapping)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _batch_len(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, Mapping):
        for v in batch.values():
            n = _batch_len(v)
            if n:
                return n
        return 0
    if isinstance(batch, (list, tuple)):
        return len(batch)
    return 0


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def _default_workers(device: torch.device, n_items: int, world: int) -> int:
    if device.type != "cuda" or n_items < 1024:
        # In-process loading is cheapest on CPU (workers compete with the model for cores)
        # and for tiny datasets; MPS shares memory with the host anyway.
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(8, cpus // max(1, world) - 1))


def _dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", "0")))
    return 0, 1, 0


def _accumulate(sums: dict[str, Tensor], key: str, value: Any, n: int,
                device: torch.device) -> None:
    """sums[key] += value * n on the device, without a host sync."""
    if not isinstance(value, Tensor):
        value = torch.tensor(float(value), device=device)
    value = value.detach()
    if value.ndim:
        value = value.float().mean()
    if key in sums:
        sums[key].add_(value, alpha=n)
    else:
        sums[key] = value.float() * n


def _finalise(sums: dict[str, Tensor], samples: int, world: int,
              device: torch.device) -> dict[str, float]:
    """Epoch means of the summed metrics: one all-reduce (under DDP) and one host copy."""
    keys = sorted(sums)
    count = torch.tensor(float(samples), device=device)
    stacked = torch.stack([sums[k].to(device) for k in keys] + [count])
    if world > 1:
        torch.distributed.all_reduce(stacked)
    values = stacked.cpu().tolist()
    total = values[-1] or 1.0
    return {k: v / total for k, v in zip(keys, values[:-1], strict=True)}


def _check_resume_config(saved: Mapping[str, Any], config: TrainConfig, n_items: int,
                         saved_items: int | None, where: Path) -> None:
    now = dataclasses.asdict(config)
    changed = [f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in _TRAJECTORY_FIELDS
               if k in saved and _jsonish(saved[k]) != _jsonish(now[k])]
    if saved_items is not None and saved_items != n_items:
        changed.append(f"dataset length: {saved_items} -> {n_items}")
    if changed:
        warnings.warn(
            f"resuming from {where} with changed settings ({'; '.join(changed)}); the "
            "checkpoint's optimizer settings (lr, betas, weight decay) are kept, the schedule "
            "spans the new total of steps, and the result will not match an uninterrupted run",
            stacklevel=3)


def _jsonish(v: Any) -> Any:
    """JSON types only (tuples become lists), NaN as None: what the JSON files can hold."""
    return ckpt.json_safe(json.loads(json.dumps(v)))


def _write_epoch_checkpoint(out_dir: Path, epoch: int, model: nn.Module, model_config: Any,
                            record: dict[str, Any], state_tensors: dict[str, Tensor],
                            state_doc: dict[str, Any], keep: int) -> Path:
    name = f"epoch-{epoch:04d}"
    final = out_dir / name
    # Built in a staging folder and published whole (replacing a previous, non-resumed
    # run's folder of the same name), then latest.json points at it.
    with staging_dir(final) as st:
        save_checkpoint(st.path, model, model_config=model_config,
                        extra={"epoch": epoch, "step": record["step"], "metrics": record})
        save_tensors_atomic(st.path / STATE_WEIGHTS_NAME, state_tensors, {"format": "pt"})
        write_json_atomic(st.path / STATE_INDEX_NAME, state_doc)
        st.publish()
    write_json_atomic(out_dir / LATEST_NAME, {"dir": name, "epoch": epoch, "step": record["step"]})
    # Older epoch folders (this run's or a previous run's) go once the new one is in place.
    for old in sorted(out_dir.glob("epoch-*")):
        if old.is_dir() and old.name != name:
            try:
                old_epoch = int(old.name.split("-", 1)[1])
            except ValueError:
                continue
            if old_epoch > epoch or old_epoch <= epoch - keep:
                shutil.rmtree(old, ignore_errors=True)
    return final


def fit(
    model: nn.Module,
    task: Task,
    dataset: Dataset,
    config: TrainConfig,
    *,
    model_config: Mapping[str, Any] | None = None,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    collate_fn: Callable[[list[Any]], Any] | None = None,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
) -> TrainResult:
    """Train ``model`` on ``dataset`` with ``task.loss``; see the module docstring.

    ``callbacks`` are called once per epoch, after the checkpoint is written, with
    a copy of the epoch record: ``epoch`` (1-based), ``step`` (optimizer steps so
    far), ``loss`` and the task's other metrics (sample-weighted epoch means),
    ``grad_norm`` (mean pre-clipping norm), ``lr`` (of the epoch's last step),
    ``samples_per_s``, ``data_wait_s`` (time the loop waited for the loader),
    ``wall_s`` (the epoch's training time), and what ``eval_fn`` returns (called on
    the unwrapped model in eval mode; a key clashing with a training metric gets an
    ``eval_`` prefix) plus ``eval_s``.
    """
    config.validate()
    if not hasattr(task, "loss") or not callable(task.loss):
        raise ConfigError(f"task {type(task).__name__} has no loss(model, batch) method")
    if isinstance(task, nn.Module) and any(p.requires_grad for p in task.parameters()):
        raise ConfigError(
            f"task {type(task).__name__} holds trainable parameters; put them in the model "
            "(fit optimises and checkpoints the model's parameters only)")
    model = unwrap_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(
            f"model {type(model).__name__} has no trainable parameters (all frozen or none); "
            "nothing for fit to train")
    try:
        n_items = len(dataset)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(
            f"dataset {type(dataset).__name__} has no length; fit needs a map-style dataset") from exc
    if n_items == 0:
        raise ConfigError(f"dataset {type(dataset).__name__} is empty: nothing to train on")

    rank, world, local_rank = _dist_info()
    distributed = world > 1
    own_group = False
    if distributed:
        import torch.distributed as dist

        if config.device in ("auto", "cuda") and torch.cuda.is_available():
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        else:
            device = resolve_device("cpu" if config.device == "auto" else config.device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            own_group = True
    else:
        device = resolve_device(config.device)
    amp_dtype = autocast_dtype(device, config.precision)
    is_main = rank == 0

    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    if out_dir is not None and is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    # --- data -------------------------------------------------------------
    sampler_gen = torch.Generator()
    sampler_gen.manual_seed(config.seed)
    if distributed:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank,
                                     shuffle=config.shuffle, seed=config.seed,
                                     drop_last=config.drop_last)
    elif config.shuffle:
        sampler = RandomSampler(dataset, generator=sampler_gen)
    else:
        sampler = SequentialSampler(dataset)
    num_workers = (config.num_workers if config.num_workers is not None
                   else _default_workers(device, n_items, world))
    loader = DataLoader(
        dataset, batch_size=config.batch_size, sampler=sampler, drop_last=config.drop_last,
        num_workers=num_workers, collate_fn=collate_fn, pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0, generator=sampler_gen,
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"dataset {type(dataset).__name__} has {n_items} items, fewer than one batch of "
            f"{config.batch_size} with drop_last=True")
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = min(total_steps, math.ceil(config.warmup * total_steps)) if config.warmup else 0

    # --- model, optimizer, schedule ----------------------------------------
    model.to(device)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup_steps))

    history: list[dict[str, Any]] = []
    start_epoch, step = 0, 0
    checkpoint: Path | None = None
    resumed_from = latest_checkpoint(out_dir) if (config.resume and out_dir is not None) else None
    if resumed_from is not None:
        load_checkpoint(resumed_from, model)
        state_doc = ckpt.read_json(resumed_from / STATE_INDEX_NAME, "training state")
        state_tensors = ckpt.read_tensors(resumed_from / STATE_WEIGHTS_NAME, "training state")
        if state_doc.get("format") != TRAIN_STATE_FORMAT:
            raise CheckpointError(f"{resumed_from / STATE_INDEX_NAME}: format "
                                  f"{state_doc.get('format')!r}, expected {TRAIN_STATE_FORMAT!r}")
        try:
            optimizer.load_state_dict(_unflatten(state_doc["optimizer"], state_tensors))
            scheduler.load_state_dict(_unflatten(state_doc["scheduler"], state_tensors))
            rng = _unflatten(state_doc["rng"], state_tensors)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{resumed_from}: training state does not fit this model/optimizer: {exc}") from exc
        _check_resume_config(state_doc.get("config", {}), config, n_items,
                             state_doc.get("dataset_len"), resumed_from)
        # The scheduler keeps this call's lambda (over this call's total steps): a longer
        # run stretches the cosine from the step reached; load_state_dict leaves it alone.
        _set_rng_state(rng, sampler_gen)
        start_epoch, step = int(state_doc["epoch"]), int(state_doc["step"])
        history = list(state_doc.get("history", []))
        checkpoint = resumed_from
    else:
        _seed_everything(config.seed)

    last_epoch = config.epochs if config.stop_after is None else min(config.epochs, config.stop_after)
    if start_epoch >= last_epoch:
        if own_group:
            torch.distributed.destroy_process_group()
        return TrainResult(history=history, checkpoint=checkpoint, model=model, device=device)

    train_module: nn.Module = _TaskModule(model, task)
    if distributed:
        train_module = nn.parallel.DistributedDataParallel(
            train_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.ddp_find_unused_parameters)

    try:
        for epoch in range(start_epoch + 1, last_epoch + 1):
            if distributed:
                sampler.set_epoch(epoch)  # type: ignore[union-attr]
                _seed_everything(config.seed + 1_000_003 * rank + 7919 * epoch)
            model.train()
            record, step = _run_epoch(
                train_module, loader, optimizer, scheduler, params, device, amp_dtype, config,
                epoch, step, steps_per_epoch, world, show=config.progress and is_main, task=task)
            if eval_fn is not None and is_main:
                t0 = time.perf_counter()
                model.eval()
                results = eval_fn(model)
                model.train()
                for k, v in dict(results).items():
                    v = float(v) if isinstance(v, (int, float, np.number)) else v
                    record[f"eval_{k}" if k in record else k] = v
                record["eval_s"] = time.perf_counter() - t0
            history.append(record)
            if out_dir is not None and is_main:
                state_tensors: dict[str, Tensor] = {}
                state_doc = {
                    "format": TRAIN_STATE_FORMAT,
                    "epoch": epoch,
                    "step": step,
                    "total_steps": total_steps,
                    "dataset_len": n_items,
                    "world_size": world,
                    "config": _jsonish(dataclasses.asdict(config)),
                    "history": _jsonish(history),
                    "optimizer": _flatten(optimizer.state_dict(), "optimizer", state_tensors),
                    "scheduler": _flatten(scheduler.state_dict(), "scheduler", state_tensors),
                    "rng": _flatten(_rng_state(sampler_gen), "rng", state_tensors),
                }
                checkpoint = _write_epoch_checkpoint(
                    out_dir, epoch, model, model_config, _jsonish(record), state_tensors,
                    state_doc, config.keep_checkpoints)
            if distributed:
                torch.distributed.barrier()  # checkpoint on disk before any rank moves on
                if out_dir is not None and not is_main:
                    checkpoint = out_dir / f"epoch-{epoch:04d}"
            for cb in callbacks:
                cb(dict(record))
    finally:
        if own_group:
            torch.distributed.destroy_process_group()
    return TrainResult(history=history, checkpoint=checkpoint, model=model, device=device)


def _run_epoch(
    train_module: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler, params: list[nn.Parameter],
    device: torch.device, amp_dtype: torch.dtype | None, config: TrainConfig, epoch: int,
    step: int, steps_per_epoch: int, world: int, show: bool, task: Task,
) -> tuple[dict[str, Any], int]:
    sums: dict[str, Tensor] = {}
    samples = 0
    data_wait = 0.0
    lr_used = optimizer.param_groups[0]["lr"]
    t_start = time.perf_counter()
    bar = progress_bar(total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", enabled=show,
               leave=False, dynamic_ncols=True)
    it = iter(loader)
    i = 0
    try:
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            data_wait += time.perf_counter() - t0
            n = _batch_len(batch)
            batch = _to_device(batch, device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.bfloat16,
                                enabled=amp_dtype is not None):
                out = train_module(batch)
            if not isinstance(out, Mapping) or "loss" not in out:
                raise ConfigError(
                    f"{type(task).__name__}.loss returned {type(out).__name__} "
                    f"{sorted(out) if isinstance(out, Mapping) else ''}; expected a dict with 'loss'")
            loss = out["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                _accumulate(sums, "grad_norm", norm, n, device)
            lr_used = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            samples += n
            for k, v in out.items():
                if k == "grad_norm" and config.grad_clip is not None:
                    k = "task_grad_norm"  # the loop's own grad_norm keeps its name
                _accumulate(sums, k, v, n, device)
            i += 1
            if show:
                bar.update(1)
                if i % config.log_every == 0 or i == steps_per_epoch:
                    # the only host sync inside the epoch, once every log_every steps
                    bar.set_postfix(loss=f"{loss.detach().float().item():.4f}")
    finally:
        bar.close()
    means = _finalise(sums, samples, world, device)  # syncs the device once
    wall = time.perf_counter() - t_start
    record: dict[str, Any] = {"epoch": epoch, "step": step}
    record.update(means)
    record.update({
        "lr": lr_used,
        "samples_per_s": samples * world / wall if wall > 0 else float("nan"),
        "data_wait_s": data_wait,
        "wall_s": wall,
    })
    if not math.isfinite(record.get("loss", 0.0)):
        warnings.warn(f"epoch {epoch}: mean loss is {record['loss']}", stacklevel=3)
    return record, step
