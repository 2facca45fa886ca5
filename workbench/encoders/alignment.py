"""The alignment task: symmetric InfoNCE between modalities of the same product.

For every pair of modalities (a, b) the batch holds, row i of `a` is pulled
towards row i of `b` and pushed from every other row of `b`, in both
directions (CLIP). Rows where either side is missing are dropped from the loss,
and missing columns are removed from every softmax: a missing modality is never
zero-filled into a logit. Query texts from the training qrels are aligned with
their relevant product the same way; other products of the batch that are also
relevant to the query are not used as negatives.

Query targets are single modalities and ``"fused"``: with a model that returns
no fused vector (the towers), ``"fused"`` is the L2-normalised mean of each
product's present modality embeddings, which is how retrieval scores a product
before a fusion is trained. That term is what teaches each tower the part of a
query only it can answer: a query naming a colour, a material and a brand is
relevant to products that match any of them, so "query <-> image" alone asks the
image to explain the brand too (noise it can only memorise), while the sum of the
three towers' agreements can explain it all, and each tower's gradient rewards
what it adds. Product pairs (text <-> image, ...) share only what both
modalities show (category; colour when the text says it), so they weigh less
than the query terms by default (`pair_weight`).

The learnable temperature lives on the model (`model.logit_scale`, CLIP's
parameterisation) so the training loop optimises it with everything else.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.encoders.model import MODALITIES, check_modalities
from workbench.errors import ConfigError

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp: temperature never below 0.01
_NEG = -1e4  # large negative for masked logits; finite so an all-masked row cannot produce NaN


def symmetric_info_nce(
    a: Tensor,
    b: Tensor,
    mask_a: Tensor,
    mask_b: Tensor,
    logit_scale: Tensor,
    ignore: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Masked CLIP loss between row-aligned L2-normalised embeddings (B, d).

    `mask_a`/`mask_b` (B,) say which rows are present; `ignore` (B, B) marks
    off-diagonal pairs that are also positives (excluded as negatives). Returns
    (loss, number of rows that contributed) without any host sync; the loss is
    0 when no row has both sides.
    """
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * (a.float() @ b.float().T)
    both = mask_a & mask_b  # rows that are a positive pair
    # Candidates of a row are the present items of the other side.
    col_ok = mask_b.unsqueeze(0).expand_as(logits)
    row_ok = mask_a.unsqueeze(1).expand_as(logits)
    eye = torch.eye(len(a), dtype=torch.bool, device=a.device)
    if ignore is not None:
        col_ok = col_ok & ~(ignore & ~eye)
        row_ok = row_ok & ~(ignore & ~eye)
    logits_ab = logits.masked_fill(~col_ok, _NEG)
    logits_ba = logits.T.masked_fill(~row_ok.T, _NEG)
    target = torch.arange(len(a), device=a.device)
    loss_ab = F.cross_entropy(logits_ab, target, reduction="none")
    loss_ba = F.cross_entropy(logits_ba, target, reduction="none")
    w = both.float()
    n = w.sum()
    loss = ((loss_ab + loss_ba) * w).sum() / (2 * n.clamp(min=1))
    return loss, n


@dataclass
class AlignmentConfig:
    modalities: tuple[str, ...] = MODALITIES  # product modalities aligned pairwise
    query_targets: tuple[str, ...] = MODALITIES + ("fused",)  # what query texts are aligned with
    query_weight: float = 1.0  # weight of each query<->modality term
    pair_weight: float = 0.2  # weight of each product pair term (see the module docstring)
    fused_weight: float = 1.0  # weight of the query<->fused term

    def __post_init__(self) -> None:
        self.modalities = check_modalities(self.modalities, "AlignmentConfig.modalities")
        targets = tuple(self.query_targets)
        bad = [t for t in targets if t not in MODALITIES + ("fused",)]
        if bad:
            raise ConfigError(
                f"AlignmentConfig.query_targets: unknown modality {bad[0]!r}; expected some of "
                f"{', '.join(MODALITIES + ('fused',))}"
            )
        self.query_targets = targets
        if self.query_weight < 0 or self.pair_weight < 0 or self.fused_weight < 0:
            raise ConfigError("AlignmentConfig weights must be >= 0")


class AlignmentTask:
    """Task for `workbench.train.fit`: the model returns embeddings, this owns the loss.

    `positive_keys` (sorted int64 of `query_idx * n_items + item_idx`, from the
    training qrels) lets the loss skip in-batch false negatives for queries.
    """

    def __init__(self, config: AlignmentConfig | None = None, positive_keys: Tensor | None = None, n_items: int = 0) -> None:
        self.config = config or AlignmentConfig()
        self.positive_keys = positive_keys
        self.n_items = int(n_items)

    def _query_ignore(self, batch: dict[str, Tensor]) -> Tensor | None:
        if self.positive_keys is None or "query_idx" not in batch or "item_idx" not in batch:
            return None
        keys = batch["query_idx"].long().unsqueeze(1) * self.n_items + batch["item_idx"].long().unsqueeze(0)
        known = self.positive_keys.to(keys.device, non_blocking=True)
        if len(known) == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        # The keys are sorted (`positive_keys`): a binary search is what `torch.isin` would do,
        # without its sort of the whole (B, B) batch each step (most of a fusion epoch on a CPU).
        at = torch.searchsorted(known, keys).clamp(max=len(known) - 1)
        return known[at] == keys

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        emb = model(batch)
        logit_scale = getattr(model, "logit_scale", None)
        scale = logit_scale if isinstance(logit_scale, Tensor) else torch.tensor(math.log(1 / 0.07))
        cfg = self.config
        terms: dict[str, Tensor] = {}
        total = emb[next(iter(emb))].new_zeros(())
        weight_sum = 0.0
        present = [m for m in cfg.modalities if m in emb]
        for a, b in itertools.combinations(present, 2):
            loss, _ = symmetric_info_nce(emb[a], emb[b], batch[f"{a}_mask"], batch[f"{b}_mask"], scale)
            terms[f"loss/{a}-{b}"] = loss.detach()
            total = total + cfg.pair_weight * loss
            weight_sum += cfg.pair_weight
        if "query" in emb and "query_mask" in batch:
            ignore = self._query_ignore(batch)
            for t in cfg.query_targets:
                if t == "fused" and "fused" not in emb and len(present) > 1:
                    target, mask_t = mean_of_present(emb, batch, present)
                elif t in emb:
                    target = emb[t]
                    mask_t = batch.get(f"{t}_mask", torch.ones_like(batch["query_mask"]))
                else:
                    continue
                weight = cfg.fused_weight if t == "fused" else cfg.query_weight
                if weight == 0:
                    continue
                loss, _ = symmetric_info_nce(emb["query"], target, batch["query_mask"], mask_t, scale, ignore)
                terms[f"loss/query-{t}"] = loss.detach()
                total = total + weight * loss
                weight_sum += weight
        terms["loss"] = total / max(weight_sum, 1e-9)
        terms["temperature"] = (1.0 / scale.detach().clamp(max=MAX_LOGIT_SCALE).exp())
        return terms


def mean_of_present(emb: dict[str, Tensor], batch: dict[str, Tensor], modalities) -> tuple[Tensor, Tensor]:
    """(L2-normalised mean of each row's present modality embeddings (B, d), rows with any (B,)).

    A missing modality contributes nothing (its placeholder embedding is multiplied by a
    False mask), so no zero vector is averaged in; a row with none stays zero and masked.
    """
    masks = [batch[f"{m}_mask"].to(emb[m].dtype) for m in modalities]
    total = functools.reduce(operator.add, (emb[m].float() * w.float().unsqueeze(1)
                                            for m, w in zip(modalities, masks, strict=True)))
    present = torch.stack([batch[f"{m}_mask"].bool() for m in modalities], 1).any(1)
    return F.normalize(total, dim=-1), present


def positive_keys(pairs: list[tuple[int, int]] | np.ndarray | Tensor, n_items: int) -> Tensor:
    """Sorted int64 keys of (query index, item index) positive pairs, for `AlignmentTask`."""
    t = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2)
    return torch.sort(t[:, 0] * n_items + t[:, 1]).values
