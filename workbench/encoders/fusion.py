"""Fusion of per-modality embeddings into one item vector of size d.

Three strategies, all taking `embeddings: dict[modality, (B, d)]` and
`masks: dict[modality, (B,) bool]` for any subset of modalities (a modality
absent from the dict is missing for every row), all returning a `FusionOutput`
with the L2-normalised fused vectors and each modality's weight per row (0 for
a missing modality), which is what explanations show:

- `weighted_mean`: the seed's weighted average, with learnable modality weights
  softmax-normalised over the modalities each row actually has;
- `concat_mlp`: the seed's neural fusion, concatenation (a learned placeholder
  for a missing modality, plus presence flags) followed by an MLP, added to the
  mean of the present vectors so training starts from a sensible fusion; its
  weights are a softmax of each present modality's cosine with the fused vector;
- `gated_attention`: a gate scores each modality vector per item; softmax over
  the present ones gives the weights ("matched mostly on image").

During training every strategy drops present modalities at random
(`modality_dropout`, never all of a row's), so the fusion is trained for the
subsets it will meet. A row with no modality at all fuses to the zero vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.checkpoint import (
    DOC_FILE,
    WEIGHTS_FILE,
    load_into,
    read_checkpoint,
    read_checkpoint_doc,
    save_checkpoint,
)
from workbench.encoders.model import MODALITIES, check_modalities
from workbench.errors import CheckpointError, ConfigError
from workbench.files import sha256_file

STRATEGIES = ("weighted_mean", "concat_mlp", "gated_attention")
FUSION_KIND = "fusion"  # the checkpoint kind of `save_fusion`


@dataclass
class FusionConfig:
    strategy: str = "gated_attention"
    d: int = 256
    modalities: tuple[str, ...] = MODALITIES
    hidden: int = 256
    modality_dropout: float = 0.2
    temperature: float = 0.05  # initial temperature when trained with `FusionModel`

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"FusionConfig.strategy={self.strategy!r}: expected one of {', '.join(STRATEGIES)}")
        self.modalities = check_modalities(self.modalities, "FusionConfig.modalities")
        if not 0 <= self.modality_dropout < 1:
            raise ConfigError(f"FusionConfig.modality_dropout={self.modality_dropout}: expected in [0, 1)")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["modalities"] = list(self.modalities)
        return data


class FusionOutput(NamedTuple):
    fused: Tensor  # (B, d), L2-normalised (zero for a row with no modality)
    weights: Tensor  # (B, M) in `modalities` order, 0 where missing, rows sum to 1 (or 0)


class Fusion(nn.Module):
    """Shared input handling: stacking, masks, modality dropout."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities = config.modalities

    def _stack(self, embeddings: dict[str, Tensor], masks: dict[str, Tensor] | None) -> tuple[Tensor, Tensor]:
        unknown = [m for m in embeddings if m not in self.modalities]
        if unknown:
            raise ConfigError(f"fusion got modality {unknown[0]!r}; it was built for {', '.join(self.modalities)}")
        if not embeddings:
            raise ConfigError("fusion needs at least one modality's embeddings")
        ref = next(iter(embeddings.values()))
        b, d = ref.shape
        if d != self.config.d:
            raise ConfigError(f"fusion was built for d={self.config.d}, got embeddings of size {d}")
        x = ref.new_zeros(b, len(self.modalities), d, dtype=torch.float32)
        present = torch.zeros(b, len(self.modalities), dtype=torch.bool, device=ref.device)
        for j, m in enumerate(self.modalities):
            if m in embeddings:
                x[:, j] = embeddings[m].float()
                present[:, j] = masks[m].bool() if masks is not None and m in masks else True
        if self.training and self.config.modality_dropout > 0:
            drop = torch.rand(present.shape, device=present.device) < self.config.modality_dropout
            kept = present & ~drop
            present = torch.where(kept.any(1, keepdim=True), kept, present)
        return x, present

    def forward(self, embeddings: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> FusionOutput:
        x, present = self._stack(embeddings, masks)
        fused, weights = self.combine(x, present)
        has_any = present.any(1, keepdim=True)
        fused = torch.where(has_any, F.normalize(fused, dim=-1), torch.zeros_like(fused))
        return FusionOutput(fused, weights * present)

    def combine(self, x: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


def _masked_softmax(scores: Tensor, present: Tensor) -> Tensor:
    w = torch.softmax(scores.masked_fill(~present, -1e9), dim=-1)
    return w * present  # a row with nothing present gets zeros instead of a uniform guess


def _mean_present(x: Tensor, present: Tensor) -> Tensor:
    p = present.float().unsqueeze(-1)
    return (x * p).sum(1) / p.sum(1).clamp(min=1)


class WeightedMeanFusion(Fusion):
    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        self.logits = nn.Parameter(torch.zeros(len(self.modalities)))

    def combine(self, x: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        w = _masked_softmax(self.logits.float().expand(present.shape), present)
        return (w.unsqueeze(-1) * x).sum(1), w

    def global_weights(self) -> dict[str, float]:
        """Learned modality weights for an item that has every modality."""
        return dict(zip(self.modalities, torch.softmax(self.logits.detach().float(), 0).tolist(), strict=True))


class ConcatMLPFusion(Fusion):
    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        m, d = len(self.modalities), config.d
        self.missing = nn.Parameter(torch.zeros(m, d))  # learned placeholder, not a zero fill
        self.mlp = nn.Sequential(nn.Linear(m * d + m, config.hidden), nn.GELU(), nn.Linear(config.hidden, d))
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)  # built just above
        nn.init.zeros_(last.weight)  # start as the plain mean of present vectors
        nn.init.zeros_(last.bias)

    def combine(self, x: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        filled = torch.where(present.unsqueeze(-1), x, self.missing.float().unsqueeze(0))
        inp = torch.cat([filled.flatten(1), present.float()], dim=1)
        fused = _mean_present(x, present) + self.mlp(inp).float()
        # The MLP has no weights of its own: explain by how strongly each present modality
        # agrees with the fused vector (softmax of cosine / 0.1 over the present ones).
        cos = (F.normalize(fused, dim=-1).unsqueeze(1) * x).sum(-1)
        return fused, _masked_softmax(cos / 0.1, present)


class GatedAttentionFusion(Fusion):
    def __init__(self, config: FusionConfig) -> None:
        super().__init__(config)
        m, d = len(self.modalities), config.d
        self.modality_bias = nn.Parameter(torch.zeros(m, config.hidden))
        self.gate_in = nn.Linear(d, config.hidden)
        self.gate_out = nn.Linear(config.hidden, 1)
        self.value = nn.Linear(d, d)
        nn.init.zeros_(self.value.weight)  # values start as the modality vectors themselves
        nn.init.zeros_(self.value.bias)

    def combine(self, x: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.gate_in(x) + self.modality_bias.unsqueeze(0))
        w = _masked_softmax(self.gate_out(h).squeeze(-1).float(), present)
        values = x + self.value(x).float()
        return (w.unsqueeze(-1) * values).sum(1), w


_CLASSES = {"weighted_mean": WeightedMeanFusion, "concat_mlp": ConcatMLPFusion, "gated_attention": GatedAttentionFusion}


def make_fusion(config: FusionConfig) -> Fusion:
    return _CLASSES[config.strategy](config)


class FusionModel(nn.Module):
    """A fusion plus a learnable temperature, trained with `AlignmentTask` on precomputed embeddings.

    The batch holds fixed tower outputs (`text`/`image`/`audio` + masks) and a
    query embedding; the model returns `{"query", "fused"}` so the task aligns
    query texts with fused products (`AlignmentConfig(query_targets=("fused",))`).
    """

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        self.fusion = make_fusion(config)
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(1.0 / config.temperature)))))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        emb = {m: batch[m] for m in self.fusion.modalities if m in batch}
        masks = {m: batch[f"{m}_mask"] for m in emb if f"{m}_mask" in batch}
        out = {"fused": self.fusion(emb, masks).fused}
        if "query" in batch:
            out["query"] = F.normalize(batch["query"].float(), dim=-1)
        return out


def save_fusion(
    fusion: Fusion, folder: str | Path, extra: dict | None = None, *, encoder_folder: str | Path | None = None
) -> Path:
    """A `workbench.checkpoint` folder (kind `fusion`, the `FusionConfig` as `model_config`).

    With `encoder_folder` (the towers it fuses), the sha256 of their weights is recorded,
    so `load_encoder` refuses this fusion beside towers trained later.
    """
    extra = dict(extra or {})
    if encoder_folder is not None:
        extra["encoder_sha256"] = sha256_file(Path(encoder_folder) / WEIGHTS_FILE)
    return save_checkpoint(folder, fusion, kind=FUSION_KIND, model_config=fusion.config.to_dict(), extra=extra)


def fusion_encoder_digest(folder: str | Path) -> str | None:
    """The sha256 of the encoder weights a saved fusion was trained on (None when not recorded)."""
    return read_checkpoint_doc(folder, kind=FUSION_KIND)["extra"].get("encoder_sha256")


def load_fusion(folder: str | Path, d: int | None = None) -> Fusion:
    """A fusion saved by `save_fusion`; `d` (the encoder's) must match the saved one."""
    folder = Path(folder)
    state, doc = read_checkpoint(folder, kind=FUSION_KIND)
    saved = doc["model_config"]
    try:
        config = FusionConfig(**{**saved, "modalities": tuple(saved.get("modalities", MODALITIES))})
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"{folder / DOC_FILE}: invalid fusion config ({e})") from e
    if d is not None and config.d != d:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: fusion trained with d={config.d}, the encoder has d={d}")
    fusion = make_fusion(config)
    load_into(fusion, state, folder / WEIGHTS_FILE, aliases=doc["aliases"])
    return fusion.eval()


def fixed_weight_fusion(weights: dict[str, float], d: int, modalities: tuple[str, ...]) -> Fusion:
    """A weighted-mean fusion with the given modality weights (over the modalities an item has).

    The item vector of a score-level late fusion (or of one modality alone, weight 1),
    for the index and for cross-modal queries: fused = normalise(sum_m w_m e_m / sum_m w_m)
    over the modalities present. A weight of 0 becomes a tiny one, so an item lacking
    every weighted modality still gets the mean of what it has.
    """
    if any(m not in modalities for m in weights) or any(w < 0 for w in weights.values()):
        raise ConfigError(f"weights {weights}: expected non-negative weights for modalities among {modalities}")
    fusion = make_fusion(FusionConfig(strategy="weighted_mean", d=d, modalities=modalities, modality_dropout=0.0))
    logits = torch.log(torch.tensor([max(float(weights.get(m, 0.0)), 1e-6) for m in fusion.modalities]))
    assert isinstance(fusion, WeightedMeanFusion)  # strategy="weighted_mean"
    with torch.no_grad():
        fusion.logits.copy_(logits)
    return fusion.eval()
