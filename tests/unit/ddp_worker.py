"""Run by tests/unit/test_train.py under `torchrun --nproc_per_node=2` (gloo, CPU).

Each rank builds the model from a *different* seed, so identical final weights
prove that DDP broadcast and gradient averaging happened. Writes
<out>/rank<R>.safetensors and <out>/rank<R>.json (history, dataset share).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from workbench.train import TrainConfig, fit


class Blobs(torch.utils.data.Dataset):
    def __init__(self, n: int = 256):
        g = torch.Generator().manual_seed(123)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.x = torch.randn(n, 8, generator=g) * 0.5 + self.y[:, None].float() * 2 - 1

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "idx": torch.tensor(i)}


class SeenTask:
    """Cross-entropy; remembers which items this rank saw (to check sharding)."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        assert not isinstance(model, nn.parallel.DistributedDataParallel)
        self.seen.extend(batch["idx"].tolist())
        return {"loss": nn.functional.cross_entropy(model(batch["x"]), batch["y"])}


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)  # different init per rank on purpose
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    task = SeenTask()
    result = fit(model, task, Blobs(), TrainConfig(epochs=2, batch_size=32, lr=1e-2,
                                                  progress=False, out_dir=str(out / "ckpt")),
                 model_config={"kind": "mlp"})
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()},
              str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "history": result.history, "seen": task.seen,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
