"""Overhead of workbench.train.fit against a bare hand-written PyTorch loop.

Both train the same MLP on the same in-memory data with the same DataLoader
settings, AdamW, gradient clipping and (on cuda) bf16 autocast; the bare loop
has no metrics, no schedule, no checkpoints and no progress bar. Prints the
samples/s of each and their ratio (fit / bare: 1.0 means no overhead).

    nice .venv/bin/python bench/bench_train_loop.py [--device cpu|cuda] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from workbench.device import autocast_dtype, resolve_device
from workbench.train import TrainConfig, fit


class DictData(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


class CETask:
    def loss(self, model, batch):
        return {"loss": nn.functional.cross_entropy(model(batch["x"]).float(), batch["y"])}


def make_model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 16)
    )


def bare_loop(model, x, y, device, epochs, batch_size, num_workers) -> float:
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = autocast_dtype(device)
    loader = DataLoader(
        DictData(x, y),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    n = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            xb = batch["x"].to(device, non_blocking=True)
            yb = batch["y"].to(device, non_blocking=True)
            with torch.autocast(
                device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None
            ):
                loss = nn.functional.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            n += len(yb)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n", type=int, default=32768)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--num-workers", type=int, default=0)
    args = ap.parse_args()
    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, 64, generator=g)
    y = torch.randint(0, 16, (args.n,), generator=g)

    bare_loop(make_model(args.width), x[:2048], y[:2048], device, 1, args.batch_size, 0)  # warm-up
    rows = []
    for rep in range(2):  # alternate to share the noise of the shared machine
        bare = bare_loop(
            make_model(args.width), x, y, device, args.epochs, args.batch_size, args.num_workers
        )
        res = fit(
            make_model(args.width),
            CETask(),
            DictData(x, y),
            TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                device=str(device),
                progress=False,
                num_workers=args.num_workers,
            ),
        )
        ours = sum(r["samples_per_s"] * r["wall_s"] for r in res.history) / sum(
            r["wall_s"] for r in res.history
        )
        wait = sum(r["data_wait_s"] for r in res.history) / sum(r["wall_s"] for r in res.history)
        rows.append(
            {
                "rep": rep,
                "bare_samples_per_s": round(bare),
                "fit_samples_per_s": round(ours),
                "ratio_fit_over_bare": round(ours / bare, 3),
                "fit_data_wait_frac": round(wait, 3),
            }
        )
    print(
        json.dumps(
            {
                "device": str(device),
                "threads": torch.get_num_threads(),
                "n": args.n,
                "width": args.width,
                "batch_size": args.batch_size,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
