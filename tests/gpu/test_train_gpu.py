"""The shared training loop on CUDA: bf16 autocast, pinned loader workers, checkpoints, resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.train import TrainConfig, fit, load_checkpoint

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


class Blobs(torch.utils.data.Dataset):
    def __init__(self, n: int = 4096, seed: int = 123):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 4, (n,), generator=g)
        centres = torch.randn(4, 32, generator=g) * 2
        self.x = centres[self.y] + torch.randn(n, 32, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class ProbeTask:
    """Cross-entropy; records where the batch lives and whether autocast is on (first call)."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.seen:
            self.seen = {
                "device": batch["x"].device.type,
                "autocast": torch.is_autocast_enabled("cuda"),
                "dtype": torch.get_autocast_dtype("cuda"),
            }
        logits = model(batch["x"])
        self.seen.setdefault("logits_dtype", logits.dtype)
        return {"loss": nn.functional.cross_entropy(logits.float(), batch["y"])}


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Dropout(0.1), nn.Linear(128, 4))


def test_cuda_bf16_training_loss_falls(tmp_path):
    task = ProbeTask()
    cfg = TrainConfig(epochs=4, batch_size=256, lr=3e-3, progress=False, out_dir=str(tmp_path))
    result = fit(mlp(), task, Blobs(), cfg, model_config={"hidden": 128})
    assert result.device.type == "cuda"
    assert task.seen["device"] == "cuda"
    assert task.seen["autocast"] is True and task.seen["dtype"] == torch.bfloat16
    assert task.seen["logits_dtype"] == torch.bfloat16
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(r["samples_per_s"] > 0 and r["data_wait_s"] >= 0 for r in result.history)
    # weights stay fp32 (autocast, not a bf16 model) and the checkpoint round-trips to CPU
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    cpu_model = mlp(seed=9)
    load_checkpoint(tmp_path, cpu_model)
    for k, v in cpu_model.state_dict().items():
        assert torch.equal(v, result.model.state_dict()[k].cpu()), k


def test_fp32_precision_disables_autocast_on_cuda():
    task = ProbeTask()
    fit(mlp(), task, Blobs(512), TrainConfig(epochs=1, batch_size=128, precision="fp32",
                                             progress=False))
    assert task.seen["autocast"] is False and task.seen["logits_dtype"] == torch.float32


def test_cuda_resume_matches_uninterrupted(tmp_path):
    # num_workers=0 so that nothing random happens in loader workers; cuBLAS may pick
    # different kernels between runs, so this compares to a tight tolerance, not bitwise.
    base = dict(epochs=4, batch_size=256, lr=3e-3, progress=False, num_workers=0)
    full = fit(mlp(), ProbeTask(), Blobs(2048), TrainConfig(**base))
    fit(mlp(), ProbeTask(), Blobs(2048), TrainConfig(**base, out_dir=str(tmp_path), stop_after=2))
    resumed = fit(mlp(seed=5), ProbeTask(), Blobs(2048),
                  TrainConfig(**base, out_dir=str(tmp_path), resume=True))
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-5, atol=1e-6)
