"""An attention sequence ranker in the style of SASRec (Kang & McAuley, 2018).

Each user is the sequence of their training items in time order (ties: input
row order). A causal transformer reads the last `max_len` items, each the sum
of a learned ID embedding, a learned projection of the item's fused embedding
(when `fit` gets `item_embeddings` and `use_fused`) and a positional embedding;
the hidden state at the last position is the user vector, and an item's score
is its dot product with the item's input vector (tied input/output embeddings).

Training predicts, at every position, the next item, with one of three losses
(`SequentialConfig.loss`):

* `"softmax"`: full softmax over every item (exact; fine up to ~20k items);
* `"sampled_softmax"`: the target against `n_negatives` uniform items shared by the
  batch (accidental hits masked), for large catalogues;
* `"bce"`: SASRec's original binary loss with one random negative per position;
* `"auto"`: softmax up to 20,000 items, sampled softmax above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from workbench.checkpoint import WEIGHTS_FILE
from workbench.errors import CheckpointError, ConfigError
from workbench.rankers.base import STATE_PREFIX, TrainedRanker
from workbench.rankers.fingerprint import RERUN
from workbench.train import TrainConfig

LOSSES = ("auto", "softmax", "sampled_softmax", "bce")
FULL_SOFTMAX_MAX_ITEMS = 20_000


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=30, batch_size=128, lr=1e-3, warmup=0.05, grad_clip=1.0,
                       progress=False)


@dataclass
class SequentialConfig:
    max_len: int = 50
    dim: int = 64
    heads: int = 2
    layers: int = 2
    dropout: float = 0.2
    loss: str = "auto"
    n_negatives: int = 256  # for sampled_softmax
    use_fused: bool = True  # add a projection of the fused item embedding when given
    train: TrainConfig = field(default_factory=_default_train)

    def validate(self) -> None:
        if self.max_len < 2 or self.dim < 1 or self.heads < 1 or self.layers < 1:
            raise ConfigError(
                f"SequentialConfig: max_len={self.max_len} (>= 2), dim={self.dim}, heads={self.heads}, "
                f"layers={self.layers} (>= 1) out of range")
        if self.dim % self.heads:
            raise ConfigError(f"SequentialConfig: dim={self.dim} must be divisible by heads={self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"SequentialConfig.dropout={self.dropout}: expected [0, 1)")
        if self.loss not in LOSSES:
            raise ConfigError(f"SequentialConfig.loss={self.loss!r}: expected one of {', '.join(LOSSES)}")
        if self.n_negatives < 1:
            raise ConfigError(f"SequentialConfig.n_negatives={self.n_negatives}: expected >= 1")


class SASRecModel(nn.Module):
    """Causal self-attention over item sequences (0 = padding, items are 1..n_items)."""

    def __init__(self, n_items: int, max_len: int, dim: int, heads: int, layers: int,
                 dropout: float, fused_dim: int = 0) -> None:
        super().__init__()
        self.n_items, self.max_len, self.heads = n_items, max_len, heads
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.item.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.fused_proj = nn.Linear(fused_dim, dim, bias=False) if fused_dim else None
        self.register_buffer("fused", torch.zeros(n_items + 1 if fused_dim else 0, fused_dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def item_vectors(self) -> Tensor:
        """(n_items + 1, dim): ID embedding plus projected fused embedding (row 0 = padding)."""
        w = self.item.weight
        if self.fused_proj is not None:
            w = w + self.fused_proj(self.fused)
        return w

    def encode(self, seq: Tensor, vectors: Tensor | None = None) -> Tensor:
        """(b, L, dim) hidden states; position t sees items 0..t only."""
        b, length = seq.shape
        vectors = self.item_vectors() if vectors is None else vectors
        real = seq > 0
        x = vectors[seq] + self.pos.weight[self.max_len - length:][None]
        x = self.drop(x) * real[..., None]
        # Allowed: earlier-or-same real positions, and always oneself (so no row is all
        # masked: a fully -inf row would give NaN that leaks through 0 * NaN).
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        allowed = causal[None] & real[:, None, :]
        allowed |= torch.eye(length, dtype=torch.bool, device=seq.device)[None]
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=seq.device)
        mask.masked_fill_(~allowed, float("-inf"))
        mask = mask.repeat_interleave(self.heads, dim=0)
        h = self.encoder(x, mask=mask)
        return self.norm(h)

    def forward(self, seq: Tensor) -> Tensor:
        """(b, dim) user vectors: the hidden state after the last item."""
        return self.encode(seq)[:, -1]

    def all_scores(self, seq: Tensor) -> Tensor:
        """(b, n_items) scores of every item (columns in ranker item order)."""
        vectors = self.item_vectors()
        return self.encode(seq, vectors)[:, -1] @ vectors[1:].T


@dataclass
class SequentialTask:
    """Next-item prediction at every position; see the module docstring for the losses."""

    loss_kind: str = "softmax"
    n_negatives: int = 256

    def loss(self, model: SASRecModel, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        seq, target = batch["seq"], batch["target"]
        vectors = model.item_vectors()
        h = model.encode(seq, vectors)
        valid = target > 0
        hv, tv = h[valid], target[valid]
        if self.loss_kind == "softmax":
            logits = hv @ vectors[1:].T
            loss = F.cross_entropy(logits.float(), tv - 1)
            acc = (logits.argmax(-1) == tv - 1).float().mean()
            return {"loss": loss, "acc@1": acc}
        if self.loss_kind == "sampled_softmax":
            neg = torch.randint(1, model.n_items + 1, (self.n_negatives,), device=seq.device)
            pos_logit = (hv * vectors[tv]).sum(-1, keepdim=True)
            neg_logit = hv @ vectors[neg].T
            neg_logit = neg_logit.masked_fill(neg[None] == tv[:, None], float("-inf"))
            logits = torch.cat([pos_logit, neg_logit], 1).float()
            zeros = torch.zeros(len(tv), dtype=torch.long, device=seq.device)
            return {"loss": F.cross_entropy(logits, zeros),
                    "acc@1": (logits.argmax(-1) == 0).float().mean()}
        neg = torch.randint(1, model.n_items + 1, tv.shape, device=seq.device)
        pos_logit = (hv * vectors[tv]).sum(-1).float()
        neg_logit = (hv * vectors[neg]).sum(-1).float()
        loss = (F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
                + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit)))
        return {"loss": loss, "auc": (pos_logit > neg_logit).float().mean()}


def user_sequences(users: np.ndarray, items: np.ndarray, times: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Each user's items (1-based) in time order, ties kept in input order."""
    order = np.lexsort((np.arange(len(users)), times, users))
    u_sorted, i_sorted = users[order], items[order] + 1
    bounds = np.searchsorted(u_sorted, np.arange(n_users + 1))
    return [i_sorted[bounds[u]:bounds[u + 1]] for u in range(n_users)]


def last_window(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """(n_users, length) int64: each user's last `length` items, left-padded with 0."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for u, s in enumerate(seqs):
        tail = s[-length:]
        if len(tail):
            out[u, length - len(tail):] = tail
    return out


class SequenceWindows(Dataset):
    """Training windows of `max_len + 1` items, cut from the end of each user's sequence.

    A window [x_0 .. x_L] gives inputs x_0..x_{L-1} and targets x_1..x_L (0 = padding).
    """

    def __init__(self, seqs: list[np.ndarray], max_len: int) -> None:
        windows = []
        for s in seqs:
            end = len(s)
            while end >= 2:
                start = max(0, end - (max_len + 1))
                w = np.zeros(max_len + 1, dtype=np.int64)
                w[max_len + 1 - (end - start):] = s[start:end]
                windows.append(w)
                end = start + 1 if start > 0 else 0  # the next window ends where this one starts
        self.windows = torch.from_numpy(np.stack(windows)) if windows else torch.zeros((0, max_len + 1), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        w = self.windows[torch.as_tensor(indices, dtype=torch.long)]
        return {"seq": w[:, :-1], "target": w[:, 1:]}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


class SequentialRanker(TrainedRanker):
    """SASRec-style ranker trained by `workbench.train.fit`; the user is their recent history."""

    name = "sequential"
    config_class = SequentialConfig
    model: SASRecModel | None

    def loss_kind(self) -> str:
        if self.config.loss != "auto":
            return self.config.loss
        return "softmax" if len(self.item_ids) <= FULL_SOFTMAX_MAX_ITEMS else "sampled_softmax"

    def _fit(self, item_embeddings: np.ndarray | None) -> None:
        cfg = self.config
        n_items = len(self.item_ids)
        seqs = user_sequences(self._train_users, self._train_items, self._train_times, len(self.user_ids))
        data = SequenceWindows(seqs, cfg.max_len)
        if len(data) == 0:
            raise ConfigError("sequential ranker: no user has two or more training interactions; "
                              "nothing to learn next-item transitions from")
        fused = item_embeddings if (cfg.use_fused and item_embeddings is not None) else None
        model_config = {"n_items": n_items, "max_len": cfg.max_len, "dim": cfg.dim, "heads": cfg.heads,
                        "layers": cfg.layers, "dropout": cfg.dropout,
                        "fused_dim": fused.shape[1] if fused is not None else 0}
        torch.manual_seed(cfg.train.seed)
        model = self.build_model(model_config)
        if fused is not None:
            model.fused[1:] = torch.from_numpy(fused)
        self._history_windows = torch.from_numpy(last_window(seqs, cfg.max_len)).to(self.device)
        task = SequentialTask(self.loss_kind(), cfg.n_negatives)
        self._train(model, task, data, model_config)

    @staticmethod
    def build_model(model_config: dict[str, Any]) -> SASRecModel:
        c = model_config
        return SASRecModel(c["n_items"], c["max_len"], c["dim"], c["heads"], c["layers"], c["dropout"],
                           c["fused_dim"])

    def _scores(self, users: Tensor) -> Tensor:
        self.model.eval()
        return self.model.all_scores(self._history_windows[users])

    def _saved_tensors(self) -> dict[str, Tensor]:
        # The user is their last window of training items: scoring needs it, not the rows.
        return {**super()._saved_tensors(), f"{STATE_PREFIX}history_windows": self._history_windows}

    def _restore_model(self, doc: dict[str, Any], tensors: dict[str, Tensor], folder: Path) -> None:
        super()._restore_model(doc, tensors, folder)
        windows = tensors.get(f"{STATE_PREFIX}history_windows")
        expected = (len(self.user_ids), self.config.max_len)
        if windows is None or tuple(windows.shape) != expected:
            raise CheckpointError(
                f"{folder / WEIGHTS_FILE}: {STATE_PREFIX}history_windows missing or not of shape "
                f"{expected} (users x max_len); {RERUN}")
        self._history_windows = windows.to(self.device)
