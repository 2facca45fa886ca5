"""GPU check: the full profile's training and serving steps on the device, each checked against the CPU.

One command (under 8 minutes on an H100/H200), figures as JSON and one line each:

    .venv/bin/python bench/gpu_check.py [--out gpu_check.json] [--items 4000]

What it measures, on the device `workbench.device.resolve_device("auto")` picks
(bf16 autocast on CUDA only, as in training):

1. tower training (full profile: d=256, frozen EfficientNet-Lite0 at 224 px, MiniLM):
   samples/s, share of step time waiting for data, GPU utilisation (sampled);
2. sequence-ranker training: samples/s;
3. full ranking: users/s for a BPR model over the catalog;
4. text embedding throughput of the exported encoder against sentence-transformers
   (same model, same texts; goal >= 2x on a GPU);
and asserts each device result matches the CPU path within a tolerance: item
embeddings of the trained towers (cosine >= 0.99 under bf16), the ranker's top-10
lists (overlap >= 0.9), the full ranking (identical top-10 for >= 95 % of users).

Without CUDA it runs every part on the CPU with small sizes (so the code paths
are exercised) and reports that the GPU part is still to run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


class UtilisationSampler:
    """GPU utilisation (%) sampled every 0.2 s while a step runs (needs pynvml; else None)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> UtilisationSampler:
        import torch

        if torch.cuda.is_available():
            def poll() -> None:
                while not self._stop.is_set():
                    try:
                        self.samples.append(float(torch.cuda.utilization()))
                    except Exception:  # pynvml missing: no utilisation figure
                        return
                    time.sleep(0.2)

            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def _catalog(root: Path, items: int, users: int, queries: int) -> Path:
    from workbench.catalog.synthetic import SyntheticConfig, generate_synthetic

    return generate_synthetic(root / "catalog", SyntheticConfig(n_items=items, n_users=users, n_queries=queries,
                                                                seed=0), progress=False)


def check_towers(catalog: Path, work: Path, device: str, profile: str) -> dict:
    import torch

    from workbench.encoders import EncoderConfig, encode_items, load_encoder
    from workbench.encoders.recipes import TowerTraining, train_towers
    from workbench.train import TrainConfig

    config = TowerTraining(encoder=EncoderConfig.for_profile(profile, image_backbone="pretrained"),
                           train=TrainConfig(epochs=1, batch_size=256, device=device, progress=False),
                           checkpoints=False)
    with UtilisationSampler() as util:
        run = train_towers(catalog, work, config, progress=False)
    last = run.history[-1]
    # The same trained towers on the CPU in fp32: the device's item embeddings must agree.
    cpu = load_encoder(run.encoder_dir, device="cpu", with_fusion=False)
    ref = encode_items(cpu.model, run.tensors, progress=False)
    agree = {m: float(torch.nn.functional.cosine_similarity(run.embeddings[m].float(), ref[m].float(), dim=1)
                      [run.tensors.masks()[m]].min()) for m in ref if m in run.tensors.masks()}
    return {"samples_per_s": last.get("samples_per_s"), "data_wait_share": last.get("data_wait_s", 0.0)
            / max(last.get("wall_s", 1e-9), 1e-9), "gpu_utilisation": util.mean,
            "min_cosine_vs_cpu": agree, "ok": all(v >= 0.99 for v in agree.values())}


def check_rankers(catalog: Path, device: str, users: int) -> dict:
    from workbench.catalog import read_catalog
    from workbench.catalog.splits import leave_last_out
    from workbench.rankers import BPRConfig, BPRRanker, SequentialConfig, SequentialRanker
    from workbench.train import TrainConfig

    cat = read_catalog(catalog)
    items = cat.products.select("item_id").collect()["item_id"].to_numpy().astype(str)
    split = leave_last_out(cat.interactions)
    out = {}
    for name, make in (("sequential", lambda d: SequentialRanker(SequentialConfig(
            train=TrainConfig(epochs=1, batch_size=256, device=d, progress=False, seed=0)))),
                       ("bpr", lambda d: BPRRanker(BPRConfig(
            train=TrainConfig(epochs=1, batch_size=1024, device=d, progress=False, seed=0))))):
        on_device = make(device).fit(split.train, items)
        test_users = np.sort(split.test["user_id"].unique().to_numpy().astype(str))[:users]
        t0 = time.perf_counter()
        recs = on_device.recommend(test_users, 10)
        users_per_s = len(test_users) / max(time.perf_counter() - t0, 1e-9)
        cpu = make("cpu").fit(split.train, items)
        ref = cpu.recommend(test_users, 10)
        overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(recs.indices, ref.indices, strict=True)]))
        out[name] = {"train_samples_per_s": on_device.history[-1].get("samples_per_s") if on_device.history else None,
                     "full_ranking_users_per_s": users_per_s, "top10_overlap_vs_cpu": overlap,
                     "ok": overlap >= 0.9}
    return out


def check_text_embedding(n: int) -> dict:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return {"skipped": "sentence-transformers is not installed (pip install -e .[bench])"}
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_text_embedding import make_texts, timed

    from workbench.encoders import EncoderConfig, MultimodalEncoder, load_encoder, save_encoder
    from workbench.encoders.text import TextTowerConfig, default_model_path

    texts = make_texts(n)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        cfg = EncoderConfig(d=256, modalities=("text",),
                            text=TextTowerConfig(model_path=default_model_path(), max_length=256))
        save_encoder(MultimodalEncoder(cfg), tmp)
        ours = load_encoder(tmp)
    peer = SentenceTransformer(default_model_path(), device=str(ours.device), local_files_only=True)
    t_ours = timed(lambda: ours.encode_text(texts, batch_size=256), ours.device, 3)
    t_peer = timed(lambda: peer.encode(texts, batch_size=256, show_progress_bar=False), ours.device, 3)
    return {"ours_texts_per_s": n / t_ours, "peer_texts_per_s": n / t_peer, "ratio": t_peer / t_ours,
            "goal_on_gpu": ">= 2x"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--items", type=int, default=None, help="synthetic products (default 4000 on GPU, 300 on CPU)")
    args = parser.parse_args()

    import torch

    from workbench.device import resolve_device

    device = resolve_device("auto")
    gpu = device.type == "cuda"
    items = args.items or (4000 if gpu else 300)
    report: dict = {
        "device": str(device), "device_name": torch.cuda.get_device_name(0) if gpu else platform.processor(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "items": items,
        "gpu_part": "run" if gpu else "still to run: no CUDA device here; every part ran on the CPU with small sizes",
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        catalog = _catalog(root, items, users=max(100, items // 4), queries=max(100, items // 2))
        report["towers"] = check_towers(catalog, root / "work", str(device), "full" if gpu else "ci")
        report["rankers"] = check_rankers(catalog, str(device), users=10_000)
    report["text_embedding"] = check_text_embedding(4000 if gpu else 256)
    report["seconds"] = time.perf_counter() - start
    ok = report["towers"]["ok"] and all(r["ok"] for r in report["rankers"].values())
    report["matches_cpu"] = ok
    Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps(report, indent=1, sort_keys=True, default=str))
    if not ok:
        raise SystemExit("the device results do not match the CPU path within tolerance (see above)")


if __name__ == "__main__":
    main()
