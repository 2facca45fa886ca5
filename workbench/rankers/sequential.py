"""An attention sequence ranker in the style of SASRec (Kang & McAuley, 2018).

Each user is the sequence of their training items in time order (ties: input
row order). A causal transformer reads the last `max_len` items, each the sum
of a learned ID embedding, a learned projection of the item's fused embedding
(when `fit` gets `item_embeddings` and `use_fused`) and a positional embedding;
the hidden state at the last position is the user vector, and an item's score
is its dot product with the item's input vector (tied input/output embeddings).

Two optional terms add FPMC's structure (Rendle et al. 2010) to the user vector,
so scores stay user vector . item vector (the two-tower form): `history_pool`
with `pool_context` (a taste: the mapped mean of the items of the window and of
the `pool_context` items before it) and `transition_rank` (a first-order
transition: a rank-r map of the last item's vector, score += v_prev . M v_item).
`layers=0` drops the attention: the model is then FPMC over item content.

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
    content_hidden: int = 0  # 0: a linear map of the content features; > 0: an MLP with this width
    # Learned ID embeddings beside the content vectors; None: only when there is no content
    # (IDs memorise the few clicks most items have; content generalises, see the module doc).
    id_embeddings: bool | None = None
    item_bias: bool = False  # a per-item score offset (content part + ID part)
    id_dropout: float = 0.0  # share of items whose ID parts are off in each training step
    unseen_from_content: bool = True  # items without training interactions: ID parts off when scoring
    # Items nobody interacted with in training as negatives of the softmax. None: only without
    # content vectors. With them, unseen items would be pushed down by what they look like,
    # the very thing a new product is recommended by (unseen is not disliked).
    unseen_negatives: bool | None = None
    history_pool: bool = False  # add the mapped mean of the history's item vectors (taste) to the user vector
    # > 0: each position attends to its last `attention_window` items only (the pool still sees all
    # `max_len`): the next item depends on the last few, the taste on the whole history
    attention_window: int = 0
    # The taste pool also reads this many of the user's items before the attention window (0: the
    # window only): a taste is estimated from the whole history, the next step from the last few.
    pool_context: int = 0
    # > 0: a first-order transition term of this rank (FPMC, Rendle et al. 2010): the user vector
    # gets a low-rank map of the current item's vector, so score += v_prev . M v_item with M of
    # rank `transition_rank` (zero at the start); 0: only the attention reads the previous item.
    transition_rank: int = 0
    train: TrainConfig = field(default_factory=_default_train)

    def __post_init__(self) -> None:
        if self.max_len < 2 or self.dim < 1 or self.heads < 1 or self.layers < 0:
            raise ConfigError(
                f"SequentialConfig: max_len={self.max_len} (>= 2), dim={self.dim}, heads={self.heads}, "
                f"layers={self.layers} (>= 0; 0: no attention) out of range")
        if self.dim % self.heads:
            raise ConfigError(f"SequentialConfig: dim={self.dim} must be divisible by heads={self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"SequentialConfig.dropout={self.dropout}: expected [0, 1)")
        if self.loss not in LOSSES:
            raise ConfigError(f"SequentialConfig.loss={self.loss!r}: expected one of {', '.join(LOSSES)}")
        if self.n_negatives < 1:
            raise ConfigError(f"SequentialConfig.n_negatives={self.n_negatives}: expected >= 1")
        if self.content_hidden < 0:
            raise ConfigError(f"SequentialConfig.content_hidden={self.content_hidden}: expected >= 0")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ConfigError(f"SequentialConfig.id_dropout={self.id_dropout}: expected [0, 1)")
        if self.attention_window < 0:
            raise ConfigError(f"SequentialConfig.attention_window={self.attention_window}: expected >= 0 (0: all)")
        if self.pool_context < 0:
            raise ConfigError(f"SequentialConfig.pool_context={self.pool_context}: expected >= 0 (0: the window only)")
        if self.pool_context and not self.history_pool:
            raise ConfigError(f"SequentialConfig.pool_context={self.pool_context} needs history_pool=True "
                              "(it is the number of earlier items the taste pool reads)")
        if self.transition_rank < 0:
            raise ConfigError(f"SequentialConfig.transition_rank={self.transition_rank}: expected >= 0 (0: none)")
        if self.layers == 0 and not (self.history_pool or self.transition_rank):
            raise ConfigError("SequentialConfig: layers=0 (no attention) needs history_pool=True or "
                              "transition_rank > 0, else the user vector reads nothing of the history")
        if self.id_embeddings is False and not self.use_fused:
            raise ConfigError("SequentialConfig: id_embeddings=False needs use_fused=True (content vectors)")


class SASRecModel(nn.Module):
    """Causal self-attention over item sequences (0 = padding, items are 1..n_items).

    An item's vector is its content vector (a linear map or a small MLP of the
    `fused` buffer: content features, see `workbench.rankers.features`) plus,
    when `id_embeddings`, a learned ID embedding; with `item_bias` its score also
    gets a bias, again content part plus ID part. `id_keep` (a (n_items + 1,) 0/1
    mask) switches the ID parts off per item: training drops them at random
    (`id_dropout`) so that content alone must predict, and items without training
    interactions are scored from their content alone.
    """

    fused: Tensor  # buffers (register_buffer), typed for mypy
    id_keep: Tensor
    in_training: Tensor

    def __init__(self, n_items: int, max_len: int, dim: int, heads: int, layers: int,
                 dropout: float, fused_dim: int = 0, content_hidden: int = 0,
                 id_embeddings: bool = True, item_bias: bool = False, history_pool: bool = False,
                 attention_window: int = 0, transition_rank: int = 0) -> None:
        super().__init__()
        self.attention_window = attention_window
        if not id_embeddings and not fused_dim:
            raise ConfigError("SASRecModel: id_embeddings=False needs content features (fused_dim > 0)")
        self.n_items, self.max_len, self.heads = n_items, max_len, heads
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0) if id_embeddings else None
        if self.item is not None:
            nn.init.normal_(self.item.weight, std=dim ** -0.5)
            with torch.no_grad():
                self.item.weight[0].zero_()
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.fused_proj: nn.Module | None = None
        if fused_dim and content_hidden:
            self.fused_proj = nn.Sequential(nn.Linear(fused_dim, content_hidden), nn.GELU(),
                                            nn.Linear(content_hidden, dim))
        elif fused_dim:
            self.fused_proj = nn.Linear(fused_dim, dim, bias=False)
        self.register_buffer("fused", torch.zeros(n_items + 1 if fused_dim else 0, fused_dim))
        self.bias = nn.Embedding(n_items + 1, 1) if item_bias else None
        if self.bias is not None:
            nn.init.zeros_(self.bias.weight)
        self.content_bias = nn.Linear(fused_dim, 1) if (item_bias and fused_dim) else None
        if self.content_bias is not None:
            nn.init.zeros_(self.content_bias.weight)
            nn.init.zeros_(self.content_bias.bias)
        # 1 = use the item's ID parts; the ranker zeroes items unseen in training
        # (not saved: the ranker derives it from its saved item counts)
        self.register_buffer("id_keep", torch.ones(n_items + 1), persistent=False)
        # which items had training interactions (the ranker sets it; row 0 = padding); not saved
        self.register_buffer("in_training", torch.ones(n_items + 1, dtype=torch.bool), persistent=False)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # layers=0: no attention (FPMC): the user vector is the taste pool plus the transition term
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        # Taste: the mean of the window's item vectors, mapped, added to the user vector (zero at
        # the start, so the model begins as plain SASRec and learns how much taste to add).
        self.pool = nn.Linear(dim, dim, bias=False) if history_pool else None
        if self.pool is not None:
            nn.init.zeros_(self.pool.weight)
        # First-order transition (FPMC): a rank-r map of the current item's vector added to the
        # user vector, i.e. score += v_prev . (B A) v_item; B starts at zero like the pool.
        self.trans_in = nn.Linear(dim, transition_rank, bias=False) if transition_rank else None
        self.trans_out = nn.Linear(transition_rank, dim, bias=False) if transition_rank else None
        if self.trans_out is not None:
            nn.init.zeros_(self.trans_out.weight)

    def item_vectors(self, id_keep: Tensor | None = None) -> Tensor:
        """(n_items + 1, dim): content vector plus ID embedding (row 0 = padding, zero)."""
        keep = self.id_keep if id_keep is None else id_keep
        w = None
        if self.item is not None:
            w = self.item.weight * keep[:, None]
        if self.fused_proj is not None:
            content = self.fused_proj(self.fused)
            content = torch.cat([torch.zeros_like(content[:1]), content[1:]])  # padding stays zero
            w = content if w is None else w + content
        assert w is not None  # __init__ refuses a model with neither ID embeddings nor content
        return w

    def item_biases(self, id_keep: Tensor | None = None) -> Tensor | None:
        """(n_items + 1,) score offsets (content part + ID part), or None without `item_bias`."""
        keep = self.id_keep if id_keep is None else id_keep
        b = None
        if self.bias is not None:
            b = self.bias.weight[:, 0] * keep
        if self.content_bias is not None:
            c = self.content_bias(self.fused)[:, 0]
            b = c if b is None else b + c
        return b

    def encode(self, seq: Tensor, vectors: Tensor | None = None) -> Tensor:
        """(b, L, dim) hidden states; position t sees items 0..t only."""
        b, length = seq.shape
        vectors = self.item_vectors() if vectors is None else vectors
        if self.encoder is None:
            return vectors.new_zeros((b, length, vectors.shape[1]))
        real = seq > 0
        x = vectors[seq] + self.pos.weight[self.max_len - length:][None]
        x = self.drop(x) * real[..., None]
        # Allowed: earlier-or-same real positions, and always oneself (so no row is all
        # masked: a fully -inf row would give NaN that leaks through 0 * NaN).
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        if self.attention_window > 0:  # position t sees t - window + 1 .. t
            causal = causal.triu(-(self.attention_window - 1))
        allowed = causal[None] & real[:, None, :]
        allowed |= torch.eye(length, dtype=torch.bool, device=seq.device)[None]
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=seq.device)
        mask.masked_fill_(~allowed, float("-inf"))
        mask = mask.repeat_interleave(self.heads, dim=0)
        h = self.encoder(x, mask=mask)
        return self.norm(h)

    def user_states(self, seq: Tensor, vectors: Tensor | None = None, context: Tensor | None = None) -> Tensor:
        """(b, L, dim) the vector that scores the next item at every position.

        The encoder's hidden state, plus (with `history_pool`) the mapped running mean
        of the item vectors up to that position (the user's taste so far; `context`,
        (b, C) items before the window, 0 = padding, joins every position's mean),
        plus (with `transition_rank`) the transition map of the item at that position.
        """
        vectors = self.item_vectors() if vectors is None else vectors
        h = self.encode(seq, vectors)
        if self.pool is not None:
            real = (seq > 0).to(h.dtype)[..., None]
            total, count = torch.cumsum(vectors[seq] * real, dim=1), torch.cumsum(real, dim=1)
            if context is not None and context.shape[1]:
                before = (context > 0).to(h.dtype)[..., None]
                total = total + (vectors[context] * before).sum(1, keepdim=True)
                count = count + before.sum(1, keepdim=True)
            h = h + self.pool(total / count.clamp_min(1.0))
        if self.trans_in is not None and self.trans_out is not None:  # padding rows of `vectors` are zero: no term there
            h = h + self.trans_out(self.trans_in(vectors[seq]))
        return h

    def forward(self, seq: Tensor, context: Tensor | None = None) -> Tensor:
        """(b, dim) user vectors: the state after the last item."""
        return self.user_states(seq, context=context)[:, -1]

    def all_scores(self, seq: Tensor, context: Tensor | None = None) -> Tensor:
        """(b, n_items) scores of every item (columns in ranker item order)."""
        vectors = self.item_vectors()
        s = self.user_states(seq, vectors, context)[:, -1] @ vectors[1:].T
        bias = self.item_biases()
        return s if bias is None else s + bias[1:]


@dataclass
class SequentialTask:
    """Next-item prediction at every position; see the module docstring for the losses.

    `id_dropout`: each step, every item's ID parts are off with this probability
    (the same draw for its input and output use), so the content vectors learn to
    predict on their own.
    """

    loss_kind: str = "softmax"
    n_negatives: int = 256
    id_dropout: float = 0.0
    unseen_negatives: bool = False  # see SequentialConfig.unseen_negatives

    def loss(self, model: SASRecModel, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        seq, target = batch["seq"], batch["target"]
        keep = model.id_keep
        if self.id_dropout > 0 and (model.item is not None or model.bias is not None):
            keep = keep * (torch.rand(keep.shape, device=keep.device) >= self.id_dropout).to(keep.dtype)
        vectors = model.item_vectors(keep)
        bias = model.item_biases(keep)
        h = model.user_states(seq, vectors, batch.get("context"))
        valid = target > 0
        hv, tv = h[valid], target[valid]
        if self.loss_kind == "softmax":
            logits = hv @ vectors[1:].T
            if bias is not None:
                logits = logits + bias[1:]
            if not self.unseen_negatives:  # targets are training items, so never masked
                logits = logits.masked_fill(~model.in_training[1:], float("-inf"))
            loss = F.cross_entropy(logits.float(), tv - 1)
            acc = (logits.argmax(-1) == tv - 1).float().mean()
            return {"loss": loss, "acc@1": acc}
        if self.loss_kind == "sampled_softmax":
            neg = torch.randint(1, model.n_items + 1, (self.n_negatives,), device=seq.device)
            pos_logit = (hv * vectors[tv]).sum(-1, keepdim=True)
            neg_logit = hv @ vectors[neg].T
            if bias is not None:
                pos_logit, neg_logit = pos_logit + bias[tv][:, None], neg_logit + bias[neg][None]
            neg_logit = neg_logit.masked_fill(neg[None] == tv[:, None], float("-inf"))
            if not self.unseen_negatives:
                neg_logit = neg_logit.masked_fill(~model.in_training[neg][None], float("-inf"))
            logits = torch.cat([pos_logit, neg_logit], 1).float()
            zeros = torch.zeros(len(tv), dtype=torch.long, device=seq.device)
            return {"loss": F.cross_entropy(logits, zeros),
                    "acc@1": (logits.argmax(-1) == 0).float().mean()}
        neg = torch.randint(1, model.n_items + 1, tv.shape, device=seq.device)
        pos_logit = (hv * vectors[tv]).sum(-1).float()
        neg_logit = (hv * vectors[neg]).sum(-1).float()
        if bias is not None:
            pos_logit, neg_logit = pos_logit + bias[tv].float(), neg_logit + bias[neg].float()
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


def context_before(seqs: list[np.ndarray], length: int, context: int) -> np.ndarray:
    """(n_users, context) int64: the `context` items before each user's last `length`, left-padded with 0."""
    out = np.zeros((len(seqs), context), dtype=np.int64)
    for u, s in enumerate(seqs):
        part = s[max(0, len(s) - length - context):max(0, len(s) - length)]
        if len(part):
            out[u, context - len(part):] = part
    return out


class SequenceWindows(Dataset):
    """Training windows of `max_len + 1` items, cut from the end of each user's sequence.

    A window [x_0 .. x_L] gives inputs x_0..x_{L-1} and targets x_1..x_L (0 = padding);
    with `context` > 0 also the `context` items before x_0 (left-padded), which the
    taste pool reads.
    """

    def __init__(self, seqs: list[np.ndarray], max_len: int, context: int = 0) -> None:
        windows, before = [], []
        for s in seqs:
            end = len(s)
            while end >= 2:
                start = max(0, end - (max_len + 1))
                w = np.zeros(max_len + 1, dtype=np.int64)
                w[max_len + 1 - (end - start):] = s[start:end]
                windows.append(w)
                c = np.zeros(context, dtype=np.int64)
                part = s[max(0, start - context):start]
                if context and len(part):
                    c[context - len(part):] = part
                before.append(c)
                end = start + 1 if start > 0 else 0  # the next window ends where this one starts
        self.windows = torch.from_numpy(np.stack(windows)) if windows else torch.zeros((0, max_len + 1), dtype=torch.long)
        self.context = torch.from_numpy(np.stack(before)) if before else torch.zeros((0, context), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        w = self.windows[idx]
        out = {"seq": w[:, :-1], "target": w[:, 1:]}
        if self.context.shape[1]:
            out["context"] = self.context[idx]
        return out

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


class SequentialRanker(TrainedRanker):
    """SASRec-style ranker trained by `workbench.train.fit`; the user is their recent history."""

    name = "sequential"
    config_class = SequentialConfig
    model: SASRecModel | None

    def _trained_model(self) -> SASRecModel:
        """The trained model; `ConfigError` before `fit`."""
        if self.model is None:
            raise self._not_fitted()
        return self.model

    def loss_kind(self) -> str:
        if self.config.loss != "auto":
            return self.config.loss
        return "softmax" if len(self.item_ids) <= FULL_SOFTMAX_MAX_ITEMS else "sampled_softmax"

    def _fit(self, item_embeddings: np.ndarray | None) -> None:
        cfg = self.config
        n_items = len(self.item_ids)
        seqs = user_sequences(self._train_users, self._train_items, self._train_times, len(self.user_ids))
        data = SequenceWindows(seqs, cfg.max_len, cfg.pool_context)
        if len(data) == 0:
            raise ConfigError("sequential ranker: no user has two or more training interactions; "
                              "nothing to learn next-item transitions from")
        fused = item_embeddings if (cfg.use_fused and item_embeddings is not None) else None
        use_ids = cfg.id_embeddings if cfg.id_embeddings is not None else fused is None
        if fused is None and not use_ids:
            raise ConfigError("SequentialConfig.id_embeddings=False needs item_embeddings (content vectors)")
        model_config = {"n_items": n_items, "max_len": cfg.max_len, "dim": cfg.dim, "heads": cfg.heads,
                        "layers": cfg.layers, "dropout": cfg.dropout,
                        "fused_dim": fused.shape[1] if fused is not None else 0,
                        "content_hidden": cfg.content_hidden if fused is not None else 0,
                        "id_embeddings": use_ids, "item_bias": cfg.item_bias,
                        "history_pool": cfg.history_pool, "attention_window": cfg.attention_window,
                        "transition_rank": cfg.transition_rank}
        torch.manual_seed(cfg.train.seed)
        model = self.build_model(model_config)
        if fused is not None:
            model.fused[1:] = torch.from_numpy(fused)
        self._set_id_keep(model)
        self._history_windows = torch.from_numpy(last_window(seqs, cfg.max_len)).to(self.device)
        self._history_context = torch.from_numpy(
            context_before(seqs, cfg.max_len, cfg.pool_context)).to(self.device)
        unseen_negatives = fused is None if cfg.unseen_negatives is None else cfg.unseen_negatives
        task = SequentialTask(self.loss_kind(), cfg.n_negatives, cfg.id_dropout, unseen_negatives)
        self._train(model, task, data, model_config)

    def _set_id_keep(self, model: SASRecModel) -> None:
        """ID parts on for items with training interactions; off for the rest when scored by content.

        An unseen item's ID embedding and bias only ever met gradients as a negative
        (pushed down); with content vectors its content is all we know, so it is
        scored by that, as if its ID were dropped out.
        """
        keep = np.ones(len(self.item_ids) + 1, dtype=np.float32)
        if self.config.unseen_from_content and model.fused_proj is not None:
            keep[1:] = self._item_counts > 0
        model.id_keep.copy_(torch.from_numpy(keep))
        seen = np.ones(len(self.item_ids) + 1, dtype=bool)
        seen[1:] = self._item_counts > 0
        model.in_training.copy_(torch.from_numpy(seen))

    @staticmethod
    def build_model(model_config: dict[str, Any]) -> SASRecModel:
        c = model_config
        # .get: rankers saved before these options existed load as they were trained
        return SASRecModel(c["n_items"], c["max_len"], c["dim"], c["heads"], c["layers"], c["dropout"],
                           c["fused_dim"], c.get("content_hidden", 0), c.get("id_embeddings", True),
                           c.get("item_bias", False), c.get("history_pool", False),
                           c.get("attention_window", 0), c.get("transition_rank", 0))

    @property
    def reads_content(self) -> bool:
        return self.model is not None and self.model.fused_proj is not None

    def _history(self, users: Tensor) -> tuple[Tensor, Tensor | None]:
        """The users' last windows and, with `pool_context`, the items before them."""
        ctx = self._history_context[users] if self._history_context.shape[1] else None
        return self._history_windows[users], ctx

    def _scores(self, users: Tensor) -> Tensor:
        model = self._trained_model()
        model.eval()
        return model.all_scores(*self._history(users))

    def _candidate_scores(self, users: Tensor, cols: Tensor) -> Tensor:
        # the terms of SASRecModel.all_scores, for the candidates only; the item vectors are
        # kept while the weights do not change (the content projection of every item would
        # otherwise dominate a request's cost on a large catalog)
        vectors, bias = self._eval_item_vectors()
        h = self._eval_user_states(users, vectors)
        s = torch.einsum("bd,bmd->bm", h, vectors[1:][cols])
        return s if bias is None else s + bias[1:][cols]

    def _eval_item_vectors(self) -> tuple[Tensor, Tensor | None]:
        """(item vectors (n_items + 1, dim), item biases or None) of the model in eval mode, computed
        once per state of its weights (keyed on the parameters' in-place version counters)."""
        model = self._trained_model()
        model.eval()
        key = (id(model), *(p._version for p in model.parameters()))
        cached = getattr(self, "_vectors_cache", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, model.item_vectors(), model.item_biases())
            self._vectors_cache = cached
        return cached[1], cached[2]

    def _eval_user_states(self, users: Tensor, vectors: Tensor) -> Tensor:
        """(b, dim) state after each user's last training item, kept per user while the weights
        do not change (keyed with the item vectors): a user's history is the training one, so a
        returning user's request costs a dot product per candidate, not a pass of the encoder.
        Users not yet kept are computed together, in the order given."""
        key = self._vectors_cache[0]
        cache = getattr(self, "_states_cache", None)
        if cache is None or cache[0] != key:
            n = len(self.user_ids)
            with torch.inference_mode(False):  # normal tensors: a later call outside inference mode writes them
                cache = (key, torch.zeros((n, vectors.shape[1]), dtype=vectors.dtype, device=vectors.device),
                         torch.zeros(n, dtype=torch.bool, device=vectors.device))
            self._states_cache = cache
        _, states, kept = cache
        todo = users[~kept[users]]
        if len(todo):
            model = self._trained_model()
            states[todo] = model.user_states(self._history_windows[todo], vectors, self._history(todo)[1])[:, -1]
            kept[todo] = True
        return states[users]

    # The two-tower form has the terms of SASRecModel.all_scores: the state after the last item
    # . the item vectors (+ the item bias as one more coordinate).
    def _item_factors(self) -> Tensor:
        model = self._trained_model()
        model.eval()
        vectors, bias = model.item_vectors()[1:], model.item_biases()
        return vectors if bias is None else torch.cat([vectors, bias[1:, None]], 1)

    def _user_factors(self, users: Tensor, items: Tensor) -> Tensor:
        model = self._trained_model()
        dim = model.pos.embedding_dim
        # item_vectors() again, from the kept factors: the padding row is zero
        vectors = torch.cat([torch.zeros_like(items[:1, :dim]), items[:, :dim]])
        u = model.user_states(self._history_windows[users], vectors, self._history(users)[1])[:, -1]
        return u if items.shape[1] == dim else torch.cat([u, torch.ones_like(u[:, :1])], 1)

    def _saved_tensors(self) -> dict[str, Tensor]:
        # The user is their last window of training items: scoring needs it, not the rows.
        out = {**super()._saved_tensors(), f"{STATE_PREFIX}history_windows": self._history_windows}
        if self._history_context.shape[1]:
            out[f"{STATE_PREFIX}history_context"] = self._history_context
        return out

    def _restore_model(self, doc: dict[str, Any], tensors: dict[str, Tensor], folder: Path) -> None:
        super()._restore_model(doc, tensors, folder)
        self._set_id_keep(self._trained_model())
        windows = tensors.get(f"{STATE_PREFIX}history_windows")
        expected = (len(self.user_ids), self.config.max_len)
        if windows is None or tuple(windows.shape) != expected:
            raise CheckpointError(
                f"{folder / WEIGHTS_FILE}: {STATE_PREFIX}history_windows missing or not of shape "
                f"{expected} (users x max_len); {RERUN}")
        self._history_windows = windows.to(self.device)
        n_context = self.config.pool_context
        context = tensors.get(f"{STATE_PREFIX}history_context") if n_context else torch.zeros(
            (len(self.user_ids), 0), dtype=torch.long)
        if context is None or tuple(context.shape) != (len(self.user_ids), n_context):
            raise CheckpointError(
                f"{folder / WEIGHTS_FILE}: {STATE_PREFIX}history_context missing or not of shape "
                f"{(len(self.user_ids), n_context)} (users x pool_context); {RERUN}")
        self._history_context = context.to(self.device)
