"""The shared training loop: learning, records, checkpoints, resume, bad input, DDP (gloo)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from workbench.errors import CheckpointError, ConfigError
from workbench.train import (
    TrainConfig,
    fit,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from workbench.train.optim import warmup_cosine

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Blobs(torch.utils.data.Dataset):
    """Two Gaussian blobs in 8-d: learnable in a few epochs by a tiny MLP."""

    def __init__(self, n: int = 256, seed: int = 123):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.x = torch.randn(n, 8, generator=g) * 0.7 + self.y[:, None].float() * 2 - 1

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class Empty(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 0

    def __getitem__(self, i: int):
        raise IndexError(i)


class CETask:
    """Cross-entropy plus accuracy; uses numpy and python RNG too (noise), like samplers do."""

    def __init__(self) -> None:
        self.models: list[type] = []

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.models.append(type(model))
        jitter = float(np.random.rand()) * 1e-3 + float(torch.rand(()).item()) * 1e-3
        logits = model(batch["x"] + jitter)
        loss = nn.functional.cross_entropy(logits, batch["y"])
        acc = (logits.argmax(1) == batch["y"]).float().mean()
        return {"loss": loss, "acc": acc}


def mlp(seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def cfg(tmp_path: Path | None = None, **kw) -> TrainConfig:
    base = dict(epochs=4, batch_size=32, lr=1e-2, progress=False, device="cpu",
                out_dir=str(tmp_path) if tmp_path is not None else None)
    base.update(kw)
    return TrainConfig(**base)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"tensor {k} differs"


# --- learning and records --------------------------------------------------


def test_fit_learns_and_reports_one_record_per_epoch():
    records: list[dict] = []
    task = CETask()
    result = fit(mlp(), task, Blobs(), cfg(epochs=5), callbacks=[records.append])
    losses = [r["loss"] for r in result.history]
    assert len(result.history) == 5 and records == result.history
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.history[-1]["acc"] > 0.9
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in records] == [8, 16, 24, 32, 40]  # 256 / 32 per epoch
    for r in records:
        for key in ("loss", "acc", "lr", "grad_norm", "samples_per_s", "data_wait_s", "wall_s"):
            assert math.isfinite(r[key]) and r[key] >= 0, (key, r)
    assert result.checkpoint is None
    # the task always sees the plain model, never the internal wrapper
    assert set(task.models) == {nn.Sequential}


def test_epoch_metrics_are_sample_weighted_means():
    class ConstTask:
        def loss(self, model, batch):  # "loss" depends on the batch size: 10 items -> 10
            out = model(batch["x"]).sum() * 0
            return {"loss": out + len(batch["x"]), "two": torch.tensor(2.0)}

    # 40 items in batches of 16: sizes 16, 16, 8 -> sample-weighted mean (16*16*2 + 8*8)/40
    result = fit(mlp(), ConstTask(), Blobs(40), cfg(epochs=1, batch_size=16))
    assert result.history[0]["loss"] == pytest.approx((16 * 16 * 2 + 8 * 8) / 40)
    assert result.history[0]["two"] == pytest.approx(2.0)


def test_cosine_schedule_with_warmup():
    fn = warmup_cosine(total_steps=100, warmup_steps=10)
    assert fn(0) == pytest.approx(0.1) and fn(9) == pytest.approx(1.0)
    assert fn(10) == pytest.approx(1.0)
    assert fn(55) == pytest.approx(0.5)
    assert fn(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert 0 < fn(99) < 1e-3
    # through fit: 4 epochs x 8 steps, warm-up ceil(0.05*32) = 2 steps; record lr = last step's lr
    result = fit(mlp(), CETask(), Blobs(), cfg(epochs=4, lr=1e-2, warmup=0.05))
    lrs = [r["lr"] for r in result.history]
    expected = [1e-2 * warmup_cosine(32, 2)(s) for s in (7, 15, 23, 31)]
    assert lrs == pytest.approx(expected)


def test_eval_fn_results_join_the_record_in_eval_mode():
    modes = []

    def eval_fn(model):
        modes.append(model.training)
        return {"val_acc": np.float64(0.5), "loss": 1.25}

    result = fit(mlp(), CETask(), Blobs(), cfg(epochs=2), eval_fn=eval_fn)
    assert modes == [False, False]
    rec = result.history[-1]
    assert rec["val_acc"] == 0.5 and isinstance(rec["val_acc"], float)
    assert rec["eval_loss"] == 1.25 and rec["loss"] != 1.25  # clash gets an eval_ prefix
    assert rec["eval_s"] >= 0


def test_non_tensor_batch_entries_pass_through_and_progress_bar_runs():
    def collate(items):
        return {"x": torch.stack([d["x"] for d in items]), "y": torch.stack([d["y"] for d in items]),
                "names": [f"item{i}" for i in range(len(items))]}

    class NamesTask(CETask):
        def loss(self, model, batch):
            assert isinstance(batch["names"], list) and batch["names"][0] == "item0"
            return super().loss(model, batch)

    result = fit(mlp(), NamesTask(), Blobs(64), cfg(epochs=1, progress=True, log_every=1),
                 collate_fn=collate)
    assert result.history[0]["step"] == 2


# --- checkpoints -----------------------------------------------------------


def test_checkpoints_each_epoch_atomically_and_without_pickle(tmp_path):
    seen_dirs = []

    def cb(rec):  # the checkpoint for this epoch is on disk before callbacks run
        seen_dirs.append(latest_checkpoint(tmp_path).name)

    result = fit(mlp(), CETask(), Blobs(), cfg(tmp_path, epochs=3), model_config={"hidden": 16},
                 callbacks=[cb])
    assert seen_dirs == ["epoch-0001", "epoch-0002", "epoch-0003"]
    assert result.checkpoint == tmp_path / "epoch-0003"
    # keep_checkpoints=1: one epoch folder; no temporary leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0003", "latest.json"]
    assert sorted(p.name for p in result.checkpoint.iterdir()) == [
        "model.json", "model.safetensors", "train_state.json", "train_state.safetensors"]
    doc = load_checkpoint(tmp_path)
    assert doc["model_config"] == {"hidden": 16}
    assert doc["extra"]["epoch"] == 3 and doc["extra"]["step"] == 24
    assert doc["extra"]["metrics"]["loss"] == pytest.approx(result.history[-1]["loss"])
    state = json.loads((result.checkpoint / "train_state.json").read_text())
    tensors = load_file(str(result.checkpoint / "train_state.safetensors"))
    assert any(k.startswith("optimizer.state.") for k in tensors)
    assert {"rng.torch", "rng.sampler"} <= set(tensors)
    assert state["epoch"] == 3 and len(state["history"]) == 3
    fresh = mlp(seed=99)
    load_checkpoint(tmp_path, fresh)
    assert_same_weights(fresh, result.model)


def test_keep_more_checkpoints(tmp_path):
    fit(mlp(), CETask(), Blobs(64), cfg(tmp_path, epochs=3, keep_checkpoints=2))
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-0002", "epoch-0003"]


class Tied(nn.Module):
    def __init__(self, n: int = 5, d: int = 4):
        super().__init__()
        self.emb = nn.Embedding(n, d)
        self.out = nn.Linear(d, n, bias=False)
        self.out.weight = self.emb.weight  # tied: safetensors refuses shared storage as-is
        self.norm = nn.BatchNorm1d(d)  # int64 buffer num_batches_tracked


def test_save_load_roundtrip_with_tied_weights_and_buffers(tmp_path):
    torch.manual_seed(0)
    a = Tied()
    a.norm.running_mean.add_(1.5)
    a.norm.num_batches_tracked.fill_(7)
    path = save_checkpoint(tmp_path / "ck", a, model_config={"n": 5}, extra={"note": "x"})
    b = Tied()
    doc = load_checkpoint(path, b)
    assert doc["model_config"] == {"n": 5} and doc["extra"] == {"note": "x"}
    assert_same_weights(a, b)
    assert b.out.weight is b.emb.weight  # still tied after loading
    # the weights file alone works too
    c = Tied()
    load_checkpoint(path / "model.safetensors", c)
    assert_same_weights(a, c)


def test_load_checkpoint_bad_inputs_name_the_file(tmp_path):
    model = mlp()
    path = save_checkpoint(tmp_path / "ck", model, model_config={})
    weights = path / "model.safetensors"

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors", model)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_checkpoint(tmp_path, model)  # a folder without a checkpoint

    # a pickled torch file under the expected name
    bad = tmp_path / "pickled"
    bad.mkdir()
    (bad / "model.json").write_text((path / "model.json").read_text())
    torch.save(model.state_dict(), bad / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"pickled.*not a valid safetensors"):
        load_checkpoint(bad, model)

    # truncated weights
    trunc = tmp_path / "trunc"
    trunc.mkdir()
    (trunc / "model.json").write_text((path / "model.json").read_text())
    data = weights.read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) - 40])
    with pytest.raises(CheckpointError, match=r"trunc.*not a valid safetensors"):
        load_checkpoint(trunc, model)

    # shape mismatch: names the file, the tensor and both shapes
    wider = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, wider)
    msg = str(err.value)
    assert str(weights) in msg and "'0.weight'" in msg and "(16, 8)" in msg and "(32, 8)" in msg

    # names that do not match: strict refuses, strict=False loads what fits
    other = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2),
                          nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint \['4.bias', '4.weight'\]"):
        load_checkpoint(path, other)
    load_checkpoint(path, other, strict=False)
    assert torch.equal(other[0].weight, model[0].weight)

    # a model.json that is not JSON
    (path / "model.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="model.json: not valid JSON"):
        load_checkpoint(path, model)


def test_unserialisable_model_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        save_checkpoint(tmp_path, mlp(), model_config={"f": object()})


# --- resume ----------------------------------------------------------------


def test_resume_after_interrupt_is_bit_identical(tmp_path):
    full = fit(mlp(), CETask(), Blobs(), cfg(tmp_path / "full", epochs=4))

    part = cfg(tmp_path / "part", epochs=4, stop_after=2)
    first = fit(mlp(), CETask(), Blobs(), part)
    assert len(first.history) == 2
    # the rest of the process goes on using the global RNGs before the resume
    torch.rand(100), np.random.rand(7)
    resumed = fit(mlp(seed=42), CETask(), Blobs(), cfg(tmp_path / "part", epochs=4, resume=True))
    assert_same_weights(resumed.model, full.model)
    drop_t = ("samples_per_s", "data_wait_s", "wall_s")
    strip = [{k: v for k, v in r.items() if k not in drop_t} for r in resumed.history]
    assert strip == [{k: v for k, v in r.items() if k not in drop_t} for r in full.history]


def test_resume_after_crash_in_a_callback(tmp_path):
    full = fit(mlp(), CETask(), Blobs(), cfg(epochs=3))

    def crash(rec):
        if rec["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(mlp(), CETask(), Blobs(), cfg(tmp_path, epochs=3), callbacks=[crash])
    resumed = fit(mlp(seed=5), CETask(), Blobs(), cfg(tmp_path, epochs=3, resume=True))
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert_same_weights(resumed.model, full.model)


def test_resume_when_all_epochs_are_done_returns_at_once(tmp_path):
    done = fit(mlp(), CETask(), Blobs(), cfg(tmp_path, epochs=2))
    calls = []
    task = CETask()
    again = fit(mlp(seed=8), task, Blobs(), cfg(tmp_path, epochs=2, resume=True),
                callbacks=[calls.append])
    assert calls == [] and task.models == []  # no step was taken
    assert again.history == done.history and again.checkpoint == tmp_path / "epoch-0002"
    assert_same_weights(again.model, done.model)


def test_resume_with_more_epochs_warns_and_continues(tmp_path):
    fit(mlp(), CETask(), Blobs(), cfg(tmp_path, epochs=2))
    with pytest.warns(UserWarning, match=r"epochs: 2 -> 4"):
        longer = fit(mlp(), CETask(), Blobs(), cfg(tmp_path, epochs=4, resume=True))
    assert [r["epoch"] for r in longer.history] == [1, 2, 3, 4]
    assert longer.history[-1]["step"] == 32


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    a = fit(mlp(), CETask(), Blobs(64), cfg(tmp_path / "x", epochs=1, resume=True))
    b = fit(mlp(), CETask(), Blobs(64), cfg(epochs=1))
    assert_same_weights(a.model, b.model)


# --- bad input -------------------------------------------------------------


def test_bad_inputs_raise_config_errors(tmp_path):
    frozen = mlp()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="Sequential has no trainable parameters"):
        fit(frozen, CETask(), Blobs(), cfg())
    with pytest.raises(ConfigError, match="dataset Empty is empty"):
        fit(mlp(), CETask(), Empty(), cfg())
    with pytest.raises(ConfigError, match="fewer than one batch"):
        fit(mlp(), CETask(), Blobs(10), cfg(batch_size=32, drop_last=True))
    with pytest.raises(ConfigError, match="resume=True needs out_dir"):
        fit(mlp(), CETask(), Blobs(), cfg(resume=True))
    with pytest.raises(ConfigError, match="warmup"):
        fit(mlp(), CETask(), Blobs(), cfg(warmup=1.5))
    with pytest.raises(ConfigError, match="precision"):
        fit(mlp(), CETask(), Blobs(), cfg(precision="fp16"))

    class NoLoss:
        def loss(self, model, batch):
            return {"total": model(batch["x"]).sum()}

    with pytest.raises(ConfigError, match=r"NoLoss.loss returned dict \['total'\]; expected a dict with 'loss'"):
        fit(mlp(), NoLoss(), Blobs(), cfg())

    class ParamTask(nn.Module):
        def __init__(self):
            super().__init__()
            self.t = nn.Parameter(torch.ones(()))

        def loss(self, model, batch):
            return {"loss": model(batch["x"]).sum() * self.t}

    with pytest.raises(ConfigError, match="ParamTask holds trainable parameters"):
        fit(mlp(), ParamTask(), Blobs(), cfg())


def test_unwrap_model_peels_wrappers():
    m = mlp()
    assert unwrap_model(nn.DataParallel(m)) is m
    assert unwrap_model(m) is m


# --- DDP -------------------------------------------------------------------


def test_ddp_two_gloo_processes_agree_and_learn(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU even where a GPU exists
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "tests" / "unit" / "ddp_worker.py"), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    for k in w0:  # ranks started from different random inits
        assert torch.equal(w0[k], w1[k]), k
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    losses = [r["loss"] for r in r0["history"]]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert losses == [r["loss"] for r in r1["history"]]  # all-reduced epoch means
    # DistributedSampler: each epoch the two ranks see disjoint halves covering the data
    for e in range(2):
        a = set(r0["seen"][e * 128:(e + 1) * 128])
        b = set(r1["seen"][e * 128:(e + 1) * 128])
        assert len(a) == 128 and not (a & b) and len(a | b) == 256
    # only rank 0 wrote; the checkpoint holds the shared weights
    ck = tmp_path / "ckpt"
    assert sorted(p.name for p in ck.iterdir()) == ["epoch-0002", "latest.json"]
    saved = load_file(str(ck / "epoch-0002" / "model.safetensors"))
    for k in w0:
        assert torch.equal(saved[k], w0[k])
    assert r1["checkpoint"] == str(ck / "epoch-0002")


def test_loader_workers_are_deterministic(tmp_path):
    # persistent workers + the seeded sampler generator: two runs see the same data order
    a = fit(mlp(), CETask(), Blobs(64), cfg(epochs=2, batch_size=16, num_workers=1))
    b = fit(mlp(), CETask(), Blobs(64), cfg(epochs=2, batch_size=16, num_workers=1))
    assert_same_weights(a.model, b.model)
    c = fit(mlp(), CETask(), Blobs(64), cfg(epochs=2, batch_size=16, num_workers=1, seed=1))
    assert not torch.equal(a.model[0].weight, c.model[0].weight)
