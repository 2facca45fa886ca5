"""Matrix factorisation trained with BPR: score(u, i) = <p_u, q_i> + b_i.

Training pairs are the distinct (user, item) pairs of the interactions; each
draws `n_negatives` items uniformly among those the user has not interacted
with (rejection sampling, vectorised). The loss is BPR, -log sigma(s_pos - s_neg),
plus L2 on the vectors the batch touches (the usual per-example regularisation
of BPR; AdamW's weight decay would shrink untouched rows too).

Fused item embeddings (`item_embeddings` of `fit`, e.g. `<work>/embeddings/items.parquet`
column `fused`) can help in two ways (`BPRConfig.fused`):

* `"init"`: item factors start as the top principal directions of the fused
  embeddings (scaled to `init_std`), so similar-looking items start close;
* `"regularise"`: a learned linear map W pulls q_i towards W f_i with weight
  `fused_weight`, which keeps rarely-seen items near their content;
* `"both"`;
* `"content"`: an item's factors *are* a learned map of its content, W f_i, plus a
  small ID offset e_i that the L2 keeps near zero (and its bias a content part plus
  an ID part). With a few clicks per item, ID factors learn little beyond
  popularity; content factors share what every item of a category, colour or
  style teaches, so the user factors can learn tastes (VBPR-like, He & McAuley 2016).

With `fused="content"`, `user_profile` adds to each user's factors a learned map of
the mean content of their training items (their taste as their history shows it), so
a user's factors need not be learned from their few clicks alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from workbench.errors import ConfigError
from workbench.rankers.base import TrainedRanker
from workbench.train import TrainConfig

FUSED_MODES = ("none", "init", "regularise", "both", "content")


def _default_train() -> TrainConfig:
    # tuned on MovieLens-100k (bench/movielens_benchmark.py)
    return TrainConfig(epochs=40, batch_size=1024, lr=5e-3, warmup=0.0, grad_clip=None,
                       progress=False)


@dataclass
class BPRConfig:
    dim: int = 128
    l2: float = 1e-2  # per-example L2 on the touched user/item vectors and biases
    n_negatives: int = 1
    item_bias: bool = True
    init_std: float = 0.1
    fused: str = "none"  # none | init | regularise | both | content (needs item_embeddings)
    fused_weight: float = 0.1
    user_profile: bool = False  # with fused="content": users also get a map of their history's mean content
    # draw negatives among items without training interactions too; None: only when the items
    # are not scored from content (an ID-only model must learn to rank unseen items low; a
    # content model must not learn to bury new products by their looks)
    unseen_negatives: bool | None = None
    train: TrainConfig = field(default_factory=_default_train)

    def __post_init__(self) -> None:
        if self.dim < 1 or self.n_negatives < 1:
            raise ConfigError(f"BPRConfig: dim={self.dim} and n_negatives={self.n_negatives} must be >= 1")
        if self.l2 < 0 or self.fused_weight < 0:
            raise ConfigError(f"BPRConfig: l2={self.l2} and fused_weight={self.fused_weight} must be >= 0")
        if self.fused not in FUSED_MODES:
            raise ConfigError(f"BPRConfig.fused={self.fused!r}: expected one of {', '.join(FUSED_MODES)}")
        if self.user_profile and self.fused != "content":
            raise ConfigError(f"BPRConfig.user_profile=True needs fused='content' (got {self.fused!r})")


class MFModel(nn.Module):
    """User and item factors (+ item bias); returns scores, the task owns the loss.

    With `content` (and `fused_dim`), an item's factors are `fused_proj(fused_i)` plus
    its ID factors (`item`), and its bias a linear map of `fused_i` plus its ID bias.
    With `user_profile`, a user's factors add `profile_proj(profile_u)`, the buffer
    `profile` holding the mean content of each user's training items.
    """

    fused: Tensor  # buffers (register_buffer), typed for mypy
    profile: Tensor

    def __init__(self, n_users: int, n_items: int, dim: int, item_bias: bool = True,
                 init_std: float = 0.1, fused_dim: int = 0, content: bool = False,
                 user_profile: bool = False) -> None:
        super().__init__()
        if (content or user_profile) and not fused_dim:
            raise ConfigError("MFModel: content factors and user profiles need item content (fused_dim > 0)")
        self.content = content
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=init_std)
        nn.init.normal_(self.item.weight, std=init_std * (0.1 if content else 1.0))
        self.bias = nn.Embedding(n_items, 1) if item_bias else None
        if self.bias is not None:
            nn.init.zeros_(self.bias.weight)
        self.fused_proj = nn.Linear(fused_dim, dim, bias=False) if fused_dim else None
        self.content_bias = nn.Linear(fused_dim, 1) if (content and item_bias) else None
        if self.content_bias is not None:
            nn.init.zeros_(self.content_bias.weight)
            nn.init.zeros_(self.content_bias.bias)
        self.register_buffer("fused", torch.zeros(n_items if fused_dim else 0, fused_dim))
        self.profile_proj = nn.Linear(fused_dim, dim, bias=False) if user_profile else None
        if self.profile_proj is not None:
            nn.init.zeros_(self.profile_proj.weight)  # starts as plain BPR
        self.register_buffer("profile", torch.zeros(n_users if user_profile else 0, fused_dim))

    def user_factors(self, users: Tensor) -> Tensor:
        """Factors of `users` (b,): ID factors plus, with `user_profile`, the mapped history content."""
        u = self.user(users)
        if self.profile_proj is not None:
            u = u + self.profile_proj(self.profile[users])
        return u

    def item_factors(self, items: Tensor | None = None) -> Tensor:
        """Factors of `items` (any shape; None: every item, (n_items, dim))."""
        v = self.item.weight if items is None else self.item(items)
        if self.content:
            assert self.fused_proj is not None  # __init__ refuses content without fused_dim
            f = self.fused if items is None else self.fused[items]
            v = v + self.fused_proj(f)
        return v

    def item_bias(self, items: Tensor) -> Tensor:
        if self.bias is None:
            return torch.zeros(items.shape, device=items.device)
        b = self.bias(items).squeeze(-1)
        if self.content_bias is not None:
            b = b + self.content_bias(self.fused[items]).squeeze(-1)
        return b

    def item_biases(self) -> Tensor | None:
        """(n_items,) every item's bias, or None without `item_bias`."""
        if self.bias is None:
            return None
        b = self.bias.weight[:, 0]
        return b + self.content_bias(self.fused)[:, 0] if self.content_bias is not None else b

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """Scores of `items` (b,) or (b, m) for `users` (b,)."""
        u = self.user_factors(users)
        v = self.item_factors(items)
        if items.ndim == 2:
            return torch.einsum("bd,bmd->bm", u, v) + self.item_bias(items)
        return (u * v).sum(-1) + self.item_bias(items)

    def all_scores(self, users: Tensor) -> Tensor:
        """(b, n_items) scores against every item: one matrix product."""
        s = self.user_factors(users) @ self.item_factors().T
        bias = self.item_biases()
        return s + bias[None] if bias is not None else s


@dataclass
class BPRTask:
    """BPR loss with per-example L2 and the optional pull towards fused content."""

    l2: float = 1e-4
    fused_weight: float = 0.0

    def loss(self, model: MFModel, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        users, pos, neg = batch["user"], batch["pos"], batch["neg"]  # neg: (b, n_neg)
        s_pos = model(users, pos)
        s_neg = model(users, neg)
        bpr = -F.logsigmoid(s_pos[:, None] - s_neg).mean()
        u, p, n = model.user(users), model.item(pos), model.item(neg)
        reg = (u.pow(2).sum(-1) + p.pow(2).sum(-1) + n.pow(2).sum(-1).mean(-1)).mean()
        if model.bias is not None:  # the ID part of the bias (a content part is shared, not per item)
            reg = reg + model.bias(pos).pow(2).mean() + model.bias(neg).pow(2).mean()
        out = {"bpr": bpr, "auc": (s_pos[:, None] > s_neg).float().mean()}
        loss = bpr + self.l2 * reg
        if self.fused_weight > 0 and model.fused_proj is not None and not model.content:
            content = model.fused_proj(model.fused[pos])
            pull = (p - content).pow(2).sum(-1).mean()
            loss = loss + self.fused_weight * pull
            out["fused_pull"] = pull
        out["loss"] = loss
        return out


class BPRDataset(Dataset):
    """Distinct (user, item) pairs; each fetch draws fresh negatives the user has not seen.

    Negatives come from torch's global generator, which `fit` seeds (and DataLoader
    workers reseed per worker), so runs are reproducible. With `unseen_negatives=False`
    they are drawn only from items someone interacted with in training: an item nobody
    has seen is not disliked, and with content factors pushing it down would teach the
    model to bury new products by what they look like.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int, n_negatives: int,
                 unseen_negatives: bool = True) -> None:
        keys = np.unique(users.astype(np.int64) * n_items + items.astype(np.int64))
        self.keys = keys  # sorted: membership by searchsorted
        self.users = torch.from_numpy(keys // n_items)
        self.items = torch.from_numpy(keys % n_items)
        self.n_items, self.n_negatives = n_items, n_negatives
        self.pool = None if unseen_negatives else torch.unique(self.items)

    def __len__(self) -> int:
        return len(self.keys)

    def _draw(self, shape: tuple[int, ...]) -> Tensor:
        if self.pool is None:
            return torch.randint(0, self.n_items, shape)
        return self.pool[torch.randint(0, len(self.pool), shape)]

    def _negatives(self, users: Tensor) -> Tensor:
        neg = self._draw((len(users), self.n_negatives))
        for _ in range(20):  # resample the (rare) negatives the user has seen
            probe = users[:, None].numpy() * self.n_items + neg.numpy()
            pos = np.minimum(np.searchsorted(self.keys, probe), len(self.keys) - 1)
            clash = torch.from_numpy(self.keys[pos] == probe)
            if not clash.any():
                break
            neg[clash] = self._draw((int(clash.sum()),))
        return neg

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        users = self.users[idx]
        return {"user": users, "pos": self.items[idx], "neg": self._negatives(users)}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        out = self.__getitems__([index])
        return {k: v[0] for k, v in out.items()}


def pca_init(embeddings: np.ndarray, dim: int, std: float) -> np.ndarray:
    """Project embeddings on their top `dim` principal directions, scaled to `std` per coordinate."""
    x = embeddings - embeddings.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    z = x @ vt[:dim].T
    if z.shape[1] < dim:  # fewer embedding dims than factors: pad with noise
        rng = np.random.default_rng(0)
        z = np.concatenate([z, rng.normal(0, z.std() + 1e-8, (len(z), dim - z.shape[1]))], 1)
    return (z / (z.std() + 1e-8) * std).astype(np.float32)


class BPRRanker(TrainedRanker):
    """Matrix factorisation with BPR, trained by `workbench.train.fit`.

    `eval_fn(ranker) -> dict` (optional) runs after every epoch; its numbers land
    in `history` (learning curves).
    """

    name = "bpr"
    config_class = BPRConfig
    model: MFModel | None

    def _trained_model(self) -> MFModel:
        """The trained model; `ConfigError` before `fit`."""
        if self.model is None:
            raise self._not_fitted()
        return self.model

    def _fit(self, item_embeddings: np.ndarray | None) -> None:
        cfg = self.config
        use_fused = cfg.fused != "none"
        if use_fused and item_embeddings is None:
            raise ConfigError(f"BPRConfig.fused={cfg.fused!r} needs item_embeddings (the fused item embeddings)")
        regularise = cfg.fused in ("regularise", "both")
        content = cfg.fused == "content"
        fused_dim = item_embeddings.shape[1] if (item_embeddings is not None and (regularise or content)) else 0
        model_config = {"n_users": len(self.user_ids), "n_items": len(self.item_ids), "dim": cfg.dim,
                        "item_bias": cfg.item_bias, "init_std": cfg.init_std, "fused_dim": fused_dim,
                        "content": content, "user_profile": bool(cfg.user_profile)}
        torch.manual_seed(cfg.train.seed)  # factor init is part of the seeded run
        model = self.build_model(model_config)
        if item_embeddings is not None:  # given whenever use_fused (checked above)
            if cfg.fused in ("init", "both"):
                model.item.weight.data.copy_(torch.from_numpy(pca_init(item_embeddings, cfg.dim, cfg.init_std)))
            if fused_dim:
                model.fused.copy_(torch.from_numpy(item_embeddings))
            if cfg.user_profile:
                model.profile.copy_(torch.from_numpy(self._user_profiles(item_embeddings)))
        data = BPRDataset(self._train_users, self._train_items, len(self.item_ids), cfg.n_negatives,
                          unseen_negatives=not content if cfg.unseen_negatives is None else cfg.unseen_negatives)
        task = BPRTask(l2=cfg.l2, fused_weight=cfg.fused_weight if regularise else 0.0)
        self._train(model, task, data, model_config)

    @staticmethod
    def build_model(model_config: dict[str, Any]) -> MFModel:
        c = model_config
        # .get: rankers saved before content factors existed load as they were trained
        return MFModel(c["n_users"], c["n_items"], c["dim"], c["item_bias"], c["init_std"], c["fused_dim"],
                       c.get("content", False), c.get("user_profile", False))

    def _user_profiles(self, item_embeddings: np.ndarray) -> np.ndarray:
        """(n_users, d) float32: the mean content row of each user's distinct training items."""
        seen = self._seen  # binary users x items
        counts = np.maximum(np.asarray(seen.sum(axis=1)).ravel(), 1.0)
        return (np.asarray(seen @ item_embeddings) / counts[:, None]).astype(np.float32)

    @property
    def reads_content(self) -> bool:
        return self.model is not None and self.model.content

    def _scores(self, users: Tensor) -> Tensor:
        model = self._trained_model()
        model.eval()
        return model.all_scores(users)

    # the terms of MFModel.all_scores: user factors . item factors (+ the bias as one more coordinate)
    def _item_factors(self) -> Tensor:
        model = self._trained_model()
        model.eval()
        v, bias = model.item_factors(), model.item_biases()
        return v if bias is None else torch.cat([v, bias[:, None]], 1)

    def _user_factors(self, users: Tensor, items: Tensor) -> Tensor:
        model = self._trained_model()
        u = model.user_factors(users)
        return u if model.bias is None else torch.cat([u, torch.ones_like(u[:, :1])], 1)

    def item_factors(self) -> np.ndarray:
        """(n_items, dim) item factors (content part included), rows aligned with `item_ids`."""
        self._check_fitted()
        with torch.no_grad():
            return self._trained_model().item_factors().detach().float().cpu().numpy()
