"""Fusion strategies: any subset of modalities, masks, weights, training, checkpoints."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from workbench.encoders import (
    MODALITIES,
    STRATEGIES,
    AlignmentConfig,
    AlignmentTask,
    EmbeddingPairDataset,
    FusionConfig,
    FusionModel,
    load_fusion,
    make_fusion,
    save_fusion,
)
from workbench.encoders.data import collate_batch
from workbench.errors import CheckpointError, ConfigError
from workbench.train import TrainConfig, fit

D = 8
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(MODALITIES, r)]


def _emb(n: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, D, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _trained_like(fusion):
    """Perturb every parameter so a test cannot pass on the zero-initialised shortcut."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in fusion.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return fusion.eval()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("subset", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_every_subset(strategy, subset):
    n = 5
    fusion = _trained_like(make_fusion(FusionConfig(strategy=strategy, d=D, hidden=16)))
    emb = {m: _emb(n, i) for i, m in enumerate(subset)}
    masks = {m: torch.ones(n, dtype=torch.bool) for m in subset}
    masks[subset[0]][0] = False  # row 0 lacks the first modality of the subset
    out = fusion(emb, masks)
    assert out.fused.shape == (n, D) and out.weights.shape == (n, len(MODALITIES))
    has_any = torch.stack([masks[m] for m in subset], 1).any(1)
    norms = out.fused.norm(dim=1)
    assert torch.allclose(norms[has_any], torch.ones(int(has_any.sum())), atol=1e-5)
    assert torch.all(norms[~has_any] == 0)
    for j, m in enumerate(MODALITIES):
        present = masks[m] if m in masks else torch.zeros(n, dtype=torch.bool)
        assert torch.all(out.weights[~present, j] == 0), f"{m} missing but weighted"
    sums = out.weights.sum(1)
    assert torch.allclose(sums[has_any], torch.ones(int(has_any.sum())), atol=1e-5)
    assert torch.all(out.weights >= 0)
    # A missing modality's values never leak into the fused vector.
    emb2 = {m: e.clone() for m, e in emb.items()}
    emb2[subset[0]][0] = torch.randn(D)
    assert torch.allclose(fusion(emb2, masks).fused, out.fused, atol=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_absent_key_equals_all_masked(strategy):
    fusion = _trained_like(make_fusion(FusionConfig(strategy=strategy, d=D, hidden=16)))
    emb = {m: _emb(4, i) for i, m in enumerate(MODALITIES)}
    masked = {"text": torch.ones(4, dtype=torch.bool), "image": torch.ones(4, dtype=torch.bool), "audio": torch.zeros(4, dtype=torch.bool)}
    a = fusion(emb, masked)
    b = fusion({"text": emb["text"], "image": emb["image"]})
    assert torch.allclose(a.fused, b.fused, atol=1e-6) and torch.allclose(a.weights, b.weights, atol=1e-6)


def test_weighted_mean_is_softmax_weighted_average():
    fusion = make_fusion(FusionConfig(strategy="weighted_mean", d=D)).eval()
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    emb = {m: _emb(3, i) for i, m in enumerate(MODALITIES)}
    out = fusion(emb)
    w = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    expected = F.normalize(w[0] * emb["text"] + w[1] * emb["image"] + w[2] * emb["audio"], dim=-1)
    assert torch.allclose(out.fused, expected, atol=1e-6)
    assert fusion.global_weights()["audio"] == pytest.approx(float(w[2]), rel=1e-6)
    # Without audio, text and image share the weight in the same ratio.
    two = fusion({"text": emb["text"], "image": emb["image"]}).weights.detach()
    assert two[0, 1] / two[0, 0] == pytest.approx(float(w[1] / w[0]), rel=1e-5)


def test_gated_attention_weights_depend_on_the_item():
    fusion = _trained_like(make_fusion(FusionConfig(strategy="gated_attention", d=D, hidden=16)))
    out = fusion({m: _emb(6, i) for i, m in enumerate(MODALITIES)})
    assert out.weights.std(0).max() > 1e-3


def test_modality_dropout_never_drops_every_modality():
    fusion = make_fusion(FusionConfig(strategy="concat_mlp", d=D, modality_dropout=0.9)).train()
    torch.manual_seed(0)
    masks = {m: torch.ones(200, dtype=torch.bool) for m in MODALITIES}
    masks["audio"][:100] = False
    out = fusion({m: _emb(200, i) for i, m in enumerate(MODALITIES)}, masks)
    assert torch.all(out.fused.norm(dim=1) > 0.99)
    assert (out.weights == 0).any()  # something was dropped
    assert torch.all(out.weights[:100, 2] == 0)  # never resurrects a missing modality


def test_bad_configs_and_inputs():
    with pytest.raises(ConfigError, match="strategy"):
        FusionConfig(strategy="max_pool")
    with pytest.raises(ConfigError, match="'smell'"):
        FusionConfig(modalities=("text", "smell"))
    fusion = make_fusion(FusionConfig(d=D, modalities=("text", "image")))
    with pytest.raises(ConfigError, match="'audio'"):
        fusion({"audio": _emb(2, 0)})
    with pytest.raises(ConfigError, match="d=8"):
        fusion({"text": torch.randn(2, 5)})


def test_save_load_round_trip_and_errors(tmp_path):
    fusion = _trained_like(make_fusion(FusionConfig(strategy="gated_attention", d=D, hidden=16)))
    save_fusion(fusion, tmp_path / "fusion")
    back = load_fusion(tmp_path / "fusion", d=D)
    emb = {m: _emb(4, i) for i, m in enumerate(MODALITIES)}
    assert torch.equal(back(emb).fused, fusion(emb).fused)
    with pytest.raises(CheckpointError, match="d=8.*d=16"):
        load_fusion(tmp_path / "fusion", d=16)
    assert torch.equal(load_fusion(tmp_path / "fusion").gate_in.weight, fusion.gate_in.weight)  # no d needed
    weights = tmp_path / "fusion" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_fusion(tmp_path / "fusion")
    with pytest.raises(CheckpointError, match="no weights"):
        load_fusion(tmp_path)
    (tmp_path / "fusion" / "model.json").rename(tmp_path / "fusion" / "config.json")
    with pytest.raises(CheckpointError, match=r"older workbench.*notebook 02 \(encoders\) or 03 \(fusion\)"):
        load_fusion(tmp_path / "fusion")


def test_trained_weighted_mean_leans_on_the_informative_modality():
    # Queries are noisy copies of the items' image vectors; text and audio are noise.
    n = 64
    items = {m: _emb(n, i) for i, m in enumerate(MODALITIES)}
    queries = F.normalize(items["image"] + 0.3 * _emb(n, 11), dim=-1)
    pairs = torch.stack([torch.arange(n), torch.arange(n), torch.full((n,), 3)], 1).numpy()
    ds = EmbeddingPairDataset(items, {m: torch.ones(n, dtype=torch.bool) for m in MODALITIES}, queries, pairs)
    model = FusionModel(FusionConfig(strategy="weighted_mean", d=D, modality_dropout=0.0))
    task = AlignmentTask(AlignmentConfig(query_targets=("fused",)))
    fit(model, task, ds, TrainConfig(epochs=6, batch_size=32, lr=0.1, progress=False), collate_fn=collate_batch)
    w = model.fusion.global_weights()
    assert w["image"] > 0.6 and w["image"] > 2 * max(w["text"], w["audio"])
