"""Results on the real catalogs of ../shared/data (issue 7's "Results to report").

1. fashion-products with derived queries: nDCG@10 / Recall@10 of text only, image only
   (scratch CNN and pretrained EfficientNet-Lite0) and fused (text + pretrained image).
2. hm-sample: popularity vs BPR on a temporal split.
3. FSDD: spoken-digit Recall@10 of the audio tower (chance 0.1).

Run: `nice .venv/bin/python bench/real_catalogs.py [--quick]` (CPU: several minutes;
features are cached under .cache/real_catalogs). Timings on the shared 2-core
machine are noisy; the quality numbers are deterministic by seed.

How the fashion systems work (all evaluated on the 200 derived queries, which are
built from attributes, not written by users):
* text only: frozen all-MiniLM-L6-v2 mean-pooled embeddings, query vs product title.
* image only: a text->image alignment learned on the catalog's own (title, photo)
  pairs with InfoNCE (queries are never seen in training): a linear head on the frozen
  MiniLM title embedding against either a linear head on frozen EfficientNet-Lite0
  features (pretrained) or a small ResNet trained from scratch at 64 px (scratch).
  At query time the query's MiniLM embedding goes through the text head and is
  scored against the image embeddings only.
* fused: per-query z-scored text-only score + z-scored pretrained image-only score
  (equal weights, fixed in advance, not tuned on the queries).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench.catalog import read_catalog  # noqa: E402
from workbench.media import load_image  # noqa: E402
from workbench.metrics import ranking_metrics, relevance_matrix  # noqa: E402
from workbench.train import TrainConfig, fit  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / ".cache" / "real_catalogs"


@dataclass
class BenchConfig:
    quick: bool = False
    skip_scratch: bool = False
    align_d: int = 128
    align_epochs: int = 30
    scratch_epochs: int = 4
    scratch_size: int = 64
    scratch_width: int = 16  # ResNet with 1 block per stage: small enough for a shared CPU
    pretrained_size: int = (
        160  # EfficientNet-Lite0 input; 224 is its native size but 5x slower on CPU
    )
    seed: int = 0


# ---------------------------------------------------------------- fashion-products


def _fashion_catalog() -> Path:
    from workbench.catalog.loaders.fashion import FashionImportConfig, import_fashion_products

    out = CACHE / "fashion-products"
    if not (out / "manifest.json").exists():
        t = time.perf_counter()
        report = import_fashion_products(
            DATA / "fashion-products", out, overwrite=True, config=FashionImportConfig()
        )
        print(f"imported fashion-products in {time.perf_counter() - t:.1f}s: {report.counts}")
    return out


def _cached(name: str, make) -> np.ndarray:
    path = CACHE / f"{name}.npy"
    if path.exists():
        return np.load(path)
    arr = make()
    np.save(path, arr)
    return arr


def _text_features(texts: list[str]) -> np.ndarray:
    from workbench.encoders.text import TextTower, TextTowerConfig

    tower = TextTower(TextTowerConfig(), d=8).eval()
    with torch.no_grad():
        return tower.pool_texts(texts, batch_size=128, progress=True).float().numpy()


def _image_array(cat, rels: list[str], size: int) -> np.ndarray:
    from tqdm.auto import tqdm

    return np.stack(
        [load_image(cat.media_path(r), size=size) for r in tqdm(rels, desc=f"images {size}px")]
    )


def _efficientnet_features(images: np.ndarray) -> np.ndarray:
    from tqdm.auto import tqdm

    from workbench.encoders.backbones import efficientnet_lite0

    model = efficientnet_lite0(True, with_head=False).eval().to(memory_format=torch.channels_last)
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(images), 32), desc="EfficientNet-Lite0"):
            x = torch.from_numpy(images[i : i + 32]).permute(0, 3, 1, 2).float() / 255.0
            out.append(model(x.contiguous(memory_format=torch.channels_last)).numpy())
    return np.concatenate(out)


class _PairData(Dataset):
    def __init__(self, text: np.ndarray, image: np.ndarray):
        self.text, self.image = torch.from_numpy(text).float(), torch.from_numpy(image)

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"text": self.text[i], "image": self.image[i]}


class _Aligner(nn.Module):
    """Linear text head + image head (linear on frozen features, or a CNN on pixels)."""

    def __init__(self, text_dim: int, image: nn.Module, d: int):
        super().__init__()
        self.text_head = nn.Linear(text_dim, d)
        self.image = image
        self.log_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))

    def encode_text(self, x: Tensor) -> Tensor:
        return F.normalize(self.text_head(x), dim=-1)

    def encode_image(self, x: Tensor) -> Tensor:
        return F.normalize(self.image(x), dim=-1)


class _InfoNCE:
    def loss(self, model: _Aligner, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        t, v = model.encode_text(batch["text"]), model.encode_image(batch["image"])
        logits = (t @ v.T) * model.log_scale.exp().clamp(max=100)
        target = torch.arange(len(t), device=t.device)
        loss = (
            F.cross_entropy(logits.float(), target) + F.cross_entropy(logits.float().T, target)
        ) / 2
        return {"loss": loss}


class _PixelCNN(nn.Module):
    """uint8 (B, H, W, 3) -> features via the workbench's scratch ResNet (ImageTower)."""

    def __init__(self, d: int, size: int, width: int):
        super().__init__()
        from workbench.encoders.image import ImageTower, ImageTowerConfig

        self.tower = ImageTower(
            ImageTowerConfig(image_size=size, width=width, blocks=(1, 1, 1, 1), augment=False), d
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.tower(x.permute(0, 3, 1, 2))


def _align(
    text: np.ndarray,
    image: np.ndarray,
    make_image_module,
    cfg: BenchConfig,
    epochs: int,
    lr: float,
) -> _Aligner:
    torch.manual_seed(cfg.seed)  # before building any module: the initialisation is part of the seed
    model = _Aligner(text.shape[1], make_image_module(), cfg.align_d)
    train = TrainConfig(
        epochs=epochs,
        batch_size=256,
        lr=lr,
        weight_decay=1e-4,
        seed=cfg.seed,
        num_workers=0,
        drop_last=True,
        progress=True,
    )
    fit(model, _InfoNCE(), _PairData(text, image), train)
    return model.eval()


@torch.no_grad()
def _encode_images(model: _Aligner, image: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            model.encode_image(torch.from_numpy(image[i : i + 256])).numpy()
            for i in range(0, len(image), 256)
        ]
    )


def _zscore(s: np.ndarray) -> np.ndarray:
    return (s - s.mean(axis=1, keepdims=True)) / (s.std(axis=1, keepdims=True) + 1e-9)


def _ranked(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :10]


def _metrics(scores: np.ndarray, rel: sp.csr_matrix) -> dict[str, float]:
    m = ranking_metrics(_ranked(scores), rel, ks=(10,))
    return {"ndcg@10": round(float(m["ndcg@10"]), 4), "recall@10": round(float(m["recall@10"]), 4)}


def _paired(a: np.ndarray, b: np.ndarray, rel: sp.csr_matrix, name_a: str, name_b: str) -> dict:
    """Paired randomisation test of per-query nDCG@10 (b - a), seeded."""
    from workbench.evaluate.bootstrap import paired_comparison

    pa = ranking_metrics(_ranked(a), rel, ks=(10,), per_query=True)["ndcg@10"]
    pb = ranking_metrics(_ranked(b), rel, ks=(10,), per_query=True)["ndcg@10"]
    r = paired_comparison(np.asarray(pa), np.asarray(pb), metric="ndcg@10", name_a=name_a, name_b=name_b, seed=0)
    d = np.asarray(pb) - np.asarray(pa)
    return {
        "comparison": f"{name_b} - {name_a} (nDCG@10)",
        "diff": round(r.diff, 4),
        "ci95": [round(r.low, 4), round(r.high, 4)],
        "p_value": round(r.p_value, 4),
        "queries_better": int((d > 1e-9).sum()),
        "queries_worse": int((d < -1e-9).sum()),
    }


def fashion_results(cfg: BenchConfig) -> dict:
    cat = read_catalog(_fashion_catalog())
    products = cat.products.collect()
    queries = cat.queries.collect()
    qrels = cat.qrels.collect()
    ids = products["item_id"].to_list()
    rel = relevance_matrix(qrels, queries["query_id"].to_list(), ids)

    title_f = _cached("fashion_title_minilm", lambda: _text_features(products["title"].to_list()))
    query_f = _cached("fashion_query_minilm", lambda: _text_features(queries["text"].to_list()))
    eff = _cached(
        f"fashion_efficientnet{cfg.pretrained_size}",
        lambda: _efficientnet_features(
            _image_array(cat, products["image"].to_list(), cfg.pretrained_size)
        ),
    )
    img64 = _cached(
        "fashion_images64", lambda: _image_array(cat, products["image"].to_list(), cfg.scratch_size)
    )

    qn = F.normalize(torch.from_numpy(query_f), dim=1)
    tn = F.normalize(torch.from_numpy(title_f), dim=1)
    text_scores = (qn @ tn.T).numpy()
    results = {"text only (MiniLM, zero-shot)": _metrics(text_scores, rel)}

    t = time.perf_counter()
    pre = _align(
        title_f,
        eff.astype(np.float32),
        lambda: nn.Linear(eff.shape[1], cfg.align_d),
        cfg,
        cfg.align_epochs,
        3e-3,
    )
    with torch.no_grad():
        img_pre = _encode_images(pre, eff.astype(np.float32))
        q_pre = pre.encode_text(torch.from_numpy(query_f)).numpy()
    pre_scores = q_pre @ img_pre.T
    results[
        f"image only, pretrained EfficientNet-Lite0 ({cfg.pretrained_size} px, frozen) + linear heads"
    ] = _metrics(pre_scores, rel)
    align_pre_s = time.perf_counter() - t

    fused_pre = _zscore(text_scores) + _zscore(pre_scores)
    results["fused: text + pretrained image (z-scored, equal weights)"] = _metrics(fused_pre, rel)
    paired = _paired(text_scores, fused_pre, rel, "text only", "fused text+pretrained image")

    # image weight chosen on separate validation queries (another seed of the same rule; texts
    # that also occur among the evaluation queries are removed), never on the evaluation queries
    from workbench.catalog.loaders.fashion import FashionImportConfig
    from workbench.catalog.loaders.queries import derive_queries

    vcfg = FashionImportConfig().queries
    vcfg.seed, vcfg.query_prefix = 1000, "val"
    vq, vqrels, _ = derive_queries(products, vcfg)
    vq = vq.filter(~vq["text"].is_in(queries["text"].implode()))
    vrel = relevance_matrix(vqrels, vq["query_id"].to_list(), ids)
    vf = _cached("fashion_valquery_minilm", lambda: _text_features(vq["text"].to_list()))
    v_text = (F.normalize(torch.from_numpy(vf), dim=1) @ tn.T).numpy()
    with torch.no_grad():
        v_img = pre.encode_text(torch.from_numpy(vf)).numpy() @ img_pre.T
    sweep = {
        round(w, 1): ranking_metrics(_ranked((1 - w) * _zscore(v_text) + w * _zscore(v_img)), vrel, ks=(10,))["ndcg@10"]
        for w in np.arange(0.0, 1.01, 0.1)
    }
    w_best = max(sweep, key=lambda w: (sweep[w], -w))
    fused_tuned = (1 - w_best) * _zscore(text_scores) + w_best * _zscore(pre_scores)
    results[f"fused: text + pretrained image (image weight {w_best} chosen on validation queries)"] = _metrics(fused_tuned, rel)
    paired_tuned = _paired(text_scores, fused_tuned, rel, "text only", f"fused (w={w_best})")
    validation = {"n_queries": vq.height, "ndcg@10_by_image_weight": {str(k): round(float(v), 4) for k, v in sweep.items()}}
    if cfg.skip_scratch:
        return {"systems": results, "paired": paired, "paired_tuned": paired_tuned, "validation": validation,
                "n_products": len(ids), "n_queries": queries.height,
                "mean_graded_per_query": round(qrels.height / queries.height, 1)}

    t = time.perf_counter()
    epochs = 1 if cfg.quick else cfg.scratch_epochs
    scratch = _align(
        title_f,
        img64,
        lambda: _PixelCNN(cfg.align_d, cfg.scratch_size, cfg.scratch_width),
        cfg,
        epochs,
        2e-3,
    )
    with torch.no_grad():
        img_scr = _encode_images(scratch, img64)
        q_scr = scratch.encode_text(torch.from_numpy(query_f)).numpy()
    results[
        f"image only, scratch ResNet (width {cfg.scratch_width}, {cfg.scratch_size} px, {epochs} epochs)"
    ] = _metrics(q_scr @ img_scr.T, rel)
    scratch_s = time.perf_counter() - t

    results["fused: text + scratch image (z-scored, equal weights)"] = _metrics(
        _zscore(text_scores) + _zscore(q_scr @ img_scr.T), rel
    )
    return {
        "systems": results,
        "paired": paired,
        "paired_tuned": paired_tuned,
        "validation": validation,
        "n_products": len(ids),
        "n_queries": queries.height,
        "mean_graded_per_query": round(qrels.height / queries.height, 1),
        "align_pretrained_s": round(align_pre_s, 1),
        "align_scratch_s": round(scratch_s, 1),
    }


# ---------------------------------------------------------------- hm-sample


def hm_results(cfg: BenchConfig) -> dict:
    from workbench.catalog.loaders.hm import import_hm
    from workbench.experiments.recommend import RecommendConfig, run_recommend

    out = CACHE / "hm"
    if not (out / "manifest.json").exists():
        import_hm(DATA / "hm-sample", out, overwrite=True)
    res = {}
    for model in ("popularity", "bpr"):
        m = run_recommend(
            RecommendConfig(
                catalog=str(out),
                model=model,
                split="temporal",
                seed=cfg.seed,
                out=str(CACHE / f"hm-{model}"),
                progress=False,
            )
        )
        rep = m["split_report"]
        res[model] = {
            **{k: round(v, 4) for k, v in m["metrics"].items()},
            "n_test_users": m["n_test_users"],
            "cold_test_users": m["cold_users"],
            "train_rows": rep["n_train"],
            "test_rows": rep["n_test"],
            "cold_test_items": rep["cold_test_items"],
            "cutoff": rep["params"].get("cutoff"),
        }
    return res


# ---------------------------------------------------------------- FSDD


def fsdd_results(cfg: BenchConfig) -> dict:
    from workbench.encoders.spoken_digits import SpokenDigitConfig, spoken_digit_retrieval
    from workbench.train import TrainConfig as TC

    out = {}
    ci = spoken_digit_retrieval(DATA / "fsdd", SpokenDigitConfig())
    out["ci (800 clips, 6 epochs)"] = ci
    if not cfg.quick:
        full = SpokenDigitConfig(
            max_train_per_digit_speaker=None,
            train=TC(epochs=10, batch_size=64, lr=3e-3, num_workers=0, progress=False),
        )
        out["all 2,500 training clips, 10 epochs"] = spoken_digit_retrieval(DATA / "fsdd", full)
    return {
        k: {m: (round(v, 4) if isinstance(v, float) else v) for m, v in r.items()}
        for k, r in out.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 scratch epoch, FSDD ci setting only"
    )
    parser.add_argument("--only", choices=("fashion", "hm", "fsdd"), default=None)
    parser.add_argument("--skip-scratch", action="store_true", help="leave out the from-scratch image CNN (slow on CPU)")
    args = parser.parse_args(argv)
    cfg = BenchConfig(quick=args.quick, skip_scratch=args.skip_scratch)
    if not torch.cuda.is_available():
        torch.set_num_threads(
            1
        )  # intra-op threads spin on a shared CPU: one thread is much faster here
    CACHE.mkdir(parents=True, exist_ok=True)
    if not DATA.is_dir():
        raise SystemExit(
            f"{DATA} is absent: these results need the real data beside the repository"
        )
    report = {}
    for name, fn in (
        ("fashion-products", fashion_results),
        ("hm-sample", hm_results),
        ("fsdd", fsdd_results),
    ):
        if args.only and not name.startswith(args.only):
            continue
        t = time.perf_counter()
        report[name] = fn(cfg)
        report[name]["wall_s"] = round(time.perf_counter() - t, 1)
        print(f"\n== {name} ==")
        print(json.dumps(report[name], indent=2, sort_keys=True))
    (CACHE / f"results{'-' + args.only if args.only else ''}.json").write_text(
        json.dumps(report, indent=2, sort_keys=True)
    )


if __name__ == "__main__":
    main()
