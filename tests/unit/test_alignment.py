"""The alignment loss: CLIP InfoNCE with missing modalities masked out, never zero-filled."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.encoders import AlignmentConfig, AlignmentTask, positive_keys, symmetric_info_nce
from workbench.errors import ConfigError

SCALE = torch.tensor(math.log(1 / 0.1))


def _emb(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def _reference(a, b, scale=10.0):
    """Textbook CLIP loss on rows that are all present."""
    logits = scale * a @ b.T
    t = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t))


def test_all_present_matches_textbook_clip():
    a, b = _emb(6, seed=1), _emb(6, seed=2)
    ones = torch.ones(6, dtype=torch.bool)
    loss, n = symmetric_info_nce(a, b, ones, ones, SCALE)
    assert n.item() == 6
    assert loss.item() == pytest.approx(_reference(a, b).item(), rel=1e-5)


def test_missing_rows_are_dropped_not_zero_filled():
    a, b = _emb(6, seed=1), _emb(6, seed=2)
    mask_a = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    mask_b = torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.bool)
    loss, n = symmetric_info_nce(a, b, mask_a, mask_b, SCALE)
    # Rows 2 (no a) and 4 (no b) leave; a->b candidates are the b rows present (0,1,2,3,5),
    # b->a candidates are the a rows present (0,1,3,4,5).
    keep = [0, 1, 3, 5]
    logits = 10.0 * a @ b.T
    cols_b = [0, 1, 2, 3, 5]
    rows_a = [0, 1, 3, 4, 5]
    l_ab = [-(logits[i, i] - torch.logsumexp(logits[i, cols_b], 0)) for i in keep]
    l_ba = [-(logits[i, i] - torch.logsumexp(logits[rows_a, i], 0)) for i in keep]
    expected = (sum(l_ab) + sum(l_ba)) / (2 * len(keep))
    assert n.item() == 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Whatever a missing row holds (zeros, noise) cannot change the loss.
    a2, b2 = a.clone(), b.clone()
    a2[2] = 0.0
    b2[4] = _emb(1, seed=9)[0]
    loss2, _ = symmetric_info_nce(a2, b2, mask_a, mask_b, SCALE)
    assert loss2.item() == pytest.approx(loss.item(), abs=1e-6)


def test_nothing_present_gives_zero_and_no_nan():
    a, b = _emb(4), _emb(4, seed=3)
    none = torch.zeros(4, dtype=torch.bool)
    loss, n = symmetric_info_nce(a, b, none, torch.ones(4, dtype=torch.bool), SCALE)
    assert n.item() == 0 and loss.item() == 0.0 and torch.isfinite(loss)


def test_ignored_pairs_are_not_negatives():
    a, b = _emb(4, seed=4), _emb(4, seed=5)
    ones = torch.ones(4, dtype=torch.bool)
    ignore = torch.zeros(4, 4, dtype=torch.bool)
    ignore[0, 1] = True  # query 0 is also relevant to item 1
    loss, _ = symmetric_info_nce(a, b, ones, ones, SCALE, ignore)
    logits = 10.0 * a @ b.T
    l_ab = [-(logits[i, i] - torch.logsumexp(logits[i, [j for j in range(4) if not (i == 0 and j == 1)]], 0)) for i in range(4)]
    l_ba = [-(logits[i, i] - torch.logsumexp(logits[[j for j in range(4) if not (j == 0 and i == 1)], i], 0)) for i in range(4)]
    assert loss.item() == pytest.approx(((sum(l_ab) + sum(l_ba)) / 8).item(), rel=1e-5)
    plain, _ = symmetric_info_nce(a, b, ones, ones, SCALE)
    assert loss.item() != pytest.approx(plain.item(), rel=1e-4)


class _Toy(torch.nn.Module):
    def __init__(self, emb: dict[str, torch.Tensor]):
        super().__init__()
        self.emb = torch.nn.ParameterDict({k: torch.nn.Parameter(v.clone()) for k, v in emb.items()})
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, batch):
        return {k: F.normalize(v, dim=-1) for k, v in self.emb.items()}


def test_task_masks_gradients_of_missing_modalities_and_learns_temperature():
    n = 6
    model = _Toy({"text": _emb(n, seed=1), "image": _emb(n, seed=2), "audio": _emb(n, seed=3), "query": _emb(n, seed=4)})
    batch = {
        "text_mask": torch.ones(n, dtype=torch.bool),
        "image_mask": torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool),
        "audio_mask": torch.tensor([0, 1, 1, 1, 1, 1], dtype=torch.bool),
        "query_mask": torch.tensor([1, 1, 0, 0, 1, 1], dtype=torch.bool),
        "query_idx": torch.tensor([0, 1, -1, -1, 2, 0]),
        "item_idx": torch.arange(n),
    }
    task = AlignmentTask(AlignmentConfig(), positive_keys([(0, 0), (0, 5), (1, 1), (2, 4)], n_items=n), n_items=n)
    out = task.loss(model, batch)
    assert set(out) >= {"loss", "temperature", "loss/text-image", "loss/text-audio", "loss/image-audio", "loss/query-image"}
    out["loss"].backward()
    g = model.emb
    assert torch.all(g["image"].grad[[1, 4]] == 0)  # missing images get no gradient at all
    assert torch.all(g["audio"].grad[0] == 0)
    assert torch.all(g["query"].grad[[2, 3]] == 0)
    assert g["image"].grad[0].abs().sum() > 0
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0
    assert out["temperature"].item() == pytest.approx(0.07, rel=1e-4)


def test_duplicate_query_in_batch_is_not_its_own_negative():
    # Query 0 sampled for items 0 and 5 (both relevant): with the qrels keys, each row's
    # other positive is ignored, so the loss equals two independent single-positive rows.
    n = 6
    emb = {"query": _emb(n, seed=4), "text": _emb(n, seed=1)}
    emb["query"][5] = emb["query"][0]
    model = _Toy(emb)
    batch = {"text_mask": torch.ones(n, dtype=torch.bool), "query_mask": torch.ones(n, dtype=torch.bool),
             "query_idx": torch.tensor([0, 1, 2, 3, 4, 0]), "item_idx": torch.arange(n)}
    keys = positive_keys([(0, 0), (0, 5), (1, 1), (2, 2), (3, 3), (4, 4)], n_items=n)
    cfg = AlignmentConfig(modalities=("text",), query_targets=("text",))
    with_keys = AlignmentTask(cfg, keys, n).loss(model, batch)["loss"]
    without = AlignmentTask(cfg).loss(model, batch)["loss"]
    assert with_keys.item() < without.item()


def test_config_rejects_unknown_modalities():
    with pytest.raises(ConfigError, match="'smell'"):
        AlignmentConfig(modalities=("text", "smell"))
    with pytest.raises(ConfigError, match="'video'"):
        AlignmentConfig(query_targets=("video",))


def test_positive_keys_sorted():
    keys = positive_keys(np.array([[2, 1], [0, 3]]), n_items=5)
    assert keys.tolist() == [3, 11]
