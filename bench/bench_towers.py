"""Training throughput of each tower (samples/s) and the time each step waits for data.

Trains each tower alone (aligned with the text head on cached backbone outputs,
so the measured cost is the tower's) for a few epochs through `workbench.train.fit`
on a synthetic catalog, and prints samples/s, data-wait time and its share of the
epoch, plus GPU utilisation when CUDA is available (nvidia-smi / torch.cuda).

    .venv/bin/python bench/bench_towers.py [--catalog DIR] [--profile ci|full] [--epochs 2]

Without --catalog a synthetic catalog is generated under .cache/bench. Numbers on
a shared CPU are noisy; the data-wait share is the figure to watch on a GPU (the
media are decoded once into a uint8/int16 cache, so it should stay small).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import torch


def gpu_utilisation() -> str:
    if not torch.cuda.is_available() or shutil.which("nvidia-smi") is None:
        return "n/a"
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=None)
    parser.add_argument("--profile", default="ci", choices=("ci", "full"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--n-items", type=int, default=2000)
    parser.add_argument("--num-workers", type=int, default=None)
    args = parser.parse_args()

    from workbench.catalog import read_catalog
    from workbench.encoders import AlignmentConfig, EncoderConfig
    from workbench.encoders.recipes import TowerTraining, train_towers
    from workbench.paths import cache_dir
    from workbench.train import TrainConfig

    if args.catalog is None:
        from workbench.catalog.synthetic import SyntheticConfig, generate_synthetic

        path = cache_dir() / "bench" / f"synthetic-{args.n_items}"
        if not (path / "manifest.json").exists():
            generate_synthetic(
                path,
                SyntheticConfig(n_items=args.n_items, n_users=50, n_queries=200),
                overwrite=True,
            )
    else:
        path = Path(args.catalog)
    cat = read_catalog(path)
    base = EncoderConfig.for_profile(args.profile)
    print(
        f"catalog={path} profile={args.profile} device={'cuda' if torch.cuda.is_available() else 'cpu'} "
        f"threads={torch.get_num_threads()}"
    )
    print(
        f"{'tower':8s} {'samples/s':>10s} {'data wait s':>12s} {'wait share':>10s} {'epoch s':>8s}  gpu util"
    )
    for tower in ("text", "image", "audio"):
        modalities = ("text",) if tower == "text" else ("text", tower)
        cfg = TowerTraining(
            encoder=replace(base, modalities=modalities),
            train=TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                progress=False,
                num_workers=args.num_workers,
            ),
            # Only the tower's own pair: text<->tower (text alone: query<->text).
            alignment=AlignmentConfig(
                modalities=modalities, query_targets=("text",) if tower == "text" else ()
            ),
            checkpoints=False,
        )
        with tempfile.TemporaryDirectory() as work:
            shutil.copytree(
                cache_dir() / "bench" / "cache", Path(work) / "cache", dirs_exist_ok=True
            ) if (cache_dir() / "bench" / "cache").exists() else None
            run = train_towers(cat, work, cfg, progress=False)
            shutil.copytree(
                Path(work) / "cache", cache_dir() / "bench" / "cache", dirs_exist_ok=True
            )
        last = run.history[-1]  # the first epoch includes warm-up
        share = last["data_wait_s"] / max(last["wall_s"], 1e-9)
        print(
            f"{tower:8s} {last['samples_per_s']:10.1f} {last['data_wait_s']:12.3f} {share:10.1%} "
            f"{last['wall_s']:8.2f}  {gpu_utilisation()}"
        )


if __name__ == "__main__":
    main()
