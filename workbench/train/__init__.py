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
``unwrap_model`` is exported for code outside ``fit`` that may receive a
DDP-wrapped model.

One job per module:

* ``config``: ``TrainConfig``, validated on construction;
* ``task``: the ``Task`` protocol and the module that runs it, so the task
  always receives the plain model, never a wrapper;
* ``distributed``: DDP set-up and teardown under ``torchrun``, wrapping, per-rank seeds;
* ``data``: the dataset checked, its sampler and loader, batches moved to the device;
* ``optim``: AdamW and the warm-up + cosine schedule;
* ``metrics``: per-step metrics summed on the device, epoch means;
* ``rng`` and ``state``: the global generators, and nested state as tensors + JSON;
* ``checkpoints``: model checkpoints, and ``fit``'s epoch checkpoints (save, resume);
* ``loop``: ``fit`` and one epoch.
"""

from workbench.train.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from workbench.train.config import TrainConfig
from workbench.train.distributed import unwrap_model
from workbench.train.loop import TrainResult, fit
from workbench.train.task import Task

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
