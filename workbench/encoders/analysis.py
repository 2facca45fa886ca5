"""Retrieval ablations for the encoder notebooks: which modalities find the products.

A query text is encoded by the text tower; products are represented by one
modality's embedding, or by a fusion of a subset of modalities. Products that
lack every modality of the subset cannot be retrieved (score -inf), which is
what "image only" means on a catalog where some images are missing.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from workbench.encoders.fusion import Fusion
from workbench.encoders.model import MODALITIES
from workbench.metrics import ranking_metrics, top_k_from_scores


def subsets(modalities: Sequence[str] = MODALITIES) -> list[tuple[str, ...]]:
    """Every non-empty subset, singles first, in modality order."""
    return [s for r in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, r)]


@torch.inference_mode()
def subset_vectors(
    embeddings: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    subset: Sequence[str],
    fusion: Fusion | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(item vectors (N, d), retrievable (N,)) for one modality subset.

    A single modality is its own embedding; a larger subset goes through `fusion`
    with the other modalities left out (or the plain mean when `fusion` is None).
    """
    present = torch.stack([masks[m].bool() for m in subset], 1).any(1)
    if len(subset) == 1:
        return embeddings[subset[0]].float(), present
    if fusion is None:
        stacked = torch.stack([embeddings[m].float() * masks[m].float().unsqueeze(1) for m in subset], 1)
        vec = torch.nn.functional.normalize(stacked.sum(1), dim=-1)
        return vec, present
    fusion.eval()
    out = fusion({m: embeddings[m] for m in subset}, {m: masks[m] for m in subset})
    return out.fused.float(), present


def rank_items(query: torch.Tensor, items: torch.Tensor, retrievable: torch.Tensor, k: int = 10) -> np.ndarray:
    """Top-k item indices per query by cosine (inputs L2-normalised); -1 pads."""
    scores = (query.float() @ items.float().T).numpy().astype(np.float64)
    scores[:, ~retrievable.numpy()] = -np.inf
    return top_k_from_scores(scores, k)


def ablation(
    query: torch.Tensor,
    embeddings: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    relevance: sp.csr_matrix,
    fusions: Mapping[str, Fusion],
    pair_fusion: str | None = None,
    k: int = 10,
) -> tuple[pl.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Text-query retrieval quality for each modality, each pair and each fusion.

    Rows: single modalities, pairs (fused by `fusions[pair_fusion]` restricted to
    the pair), then `fused/<strategy>` with all modalities for every fusion.
    Returns the table (system, ndcg@k, recall@k, n_queries) and per-query values.
    """
    mods = [m for m in MODALITIES if m in embeddings]
    systems: dict[str, tuple[tuple[str, ...], Fusion | None]] = {}
    for s in subsets(mods):
        if len(s) < len(mods):
            systems["+".join(s)] = (s, fusions.get(pair_fusion) if pair_fusion else None)
    if not fusions:
        systems["+".join(mods)] = (tuple(mods), None)
    for name, f in fusions.items():
        systems[f"fused/{name}"] = (tuple(mods), f)
    rows: list[dict[str, object]] = []
    per_query: dict[str, dict[str, np.ndarray]] = {}
    for name, (s, fusion) in systems.items():
        vec, ok = subset_vectors(embeddings, masks, s, fusion)
        ranked = rank_items(query, vec, ok, k)
        pq = ranking_metrics(ranked, relevance, ks=(k,), per_query=True, metrics=("ndcg", "recall"))
        per_query[name] = pq
        rows.append({"system": name, f"ndcg@{k}": float(np.nanmean(pq[f"ndcg@{k}"])),
                     f"recall@{k}": float(np.nanmean(pq[f"recall@{k}"])),
                     "n_queries": int(np.isfinite(pq[f"ndcg@{k}"]).sum())})
    return pl.DataFrame(rows), per_query


def explain(weights: torch.Tensor, modalities: Sequence[str] = MODALITIES) -> list[str]:
    """'matched mostly on image (62%)' per row of fusion weights."""
    out = []
    for row in weights.float().tolist():
        j = int(np.argmax(row))
        out.append(f"mostly {modalities[j]} ({row[j]:.0%})" if sum(row) > 0 else "no modality")
    return out


def history_frame(history: Sequence[Mapping[str, float]]) -> pl.DataFrame:
    """Epoch records of `fit` as a long frame (epoch, term, value) of the loss terms."""
    rows = [
        {"epoch": int(h["epoch"]), "term": k.removeprefix("loss/") if k != "loss" else "total", "value": float(h[k])}
        for h in history
        for k in h
        if k == "loss" or k.startswith("loss/")
    ]
    return pl.DataFrame(rows, schema={"epoch": pl.Int64, "term": pl.Utf8, "value": pl.Float64})


def loss_curves_figure(history: Sequence[Mapping[str, float]], title: str = "Alignment loss per epoch"):
    """Plotly lines of the total loss and each modality pair's InfoNCE term."""
    import plotly.express as px

    return px.line(history_frame(history), x="epoch", y="value", color="term", markers=True,
                   title=title, template="plotly_white", labels={"value": "InfoNCE loss"})


def modality_weights(fusions: Mapping[str, Fusion], items: Mapping[str, torch.Tensor],
                     masks: Mapping[str, torch.Tensor], modalities: Sequence[str]) -> pl.DataFrame:
    """How much each fusion leans on each modality: one row per (fusion, modality), `weight`.

    A fusion with global weights (the weighted mean) gives them, as for a product with
    every modality; the others weigh each product's modalities themselves, so theirs is
    the mean per-product weight over the products that have that modality. Rows follow
    the order of `fusions`.
    """
    rows = []
    present = torch.stack([masks[m] for m in modalities], 1).float()
    for name, fusion in fusions.items():
        global_weights = getattr(fusion, "global_weights", None)
        if global_weights is not None:
            rows += [{"fusion": name, "modality": m, "weight": w} for m, w in global_weights().items()]
            continue
        with torch.inference_mode():
            per_product = fusion(dict(items), dict(masks)).weights
        mean = (per_product * present).sum(0) / present.sum(0)
        rows += [{"fusion": name, "modality": m, "weight": float(mean[j])} for j, m in enumerate(modalities)]
    return pl.DataFrame(rows)


def index_fusion(chosen: str, systems: Mapping[str, Any], tuning: Mapping[str, Mapping[str, Any]],
                 fusions: Mapping[str, Fusion], fallback: str, d: int,
                 modalities: tuple[str, ...]) -> tuple[str, Fusion]:
    """The dense system whose item vectors the index holds for search system `chosen`, and its fusion.

    `systems` are the search candidates by name (each with `name` and `kind`, a late
    fusion also `weights`), `tuning[name]["dense"]` a hybrid's dense part. A learned
    fusion ("fused/<strategy>") is kept as trained; late fusion and one modality alone
    become a weighted mean with those weights (`fixed_weight_fusion`); BM25 alone keeps
    the `fallback` learned fusion, so cross-modal queries still have vectors to search.
    """
    from workbench.encoders.fusion import fixed_weight_fusion

    system = systems[chosen]
    dense = systems[tuning[system.name]["dense"]] if system.kind == "hybrid" else system
    if dense.kind == "learned":
        return dense.name, fusions[dense.name.removeprefix("fused/")]
    if dense.kind == "late":
        return dense.name, fixed_weight_fusion(dict(dense.weights), d, modalities)
    if dense.kind == "single":
        return dense.name, fixed_weight_fusion({dense.name: 1.0}, d, modalities)
    return fallback, fusions[fallback.removeprefix("fused/")]
