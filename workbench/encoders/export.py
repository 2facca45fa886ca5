"""Inference: the `Encoder` used for queries, and the catalog's embedding files.

`load_encoder(<work>/encoders)` returns an `Encoder` with `encode_text`,
`encode_images`, `encode_audio` and `fuse`, all returning L2-normalised float32
CPU tensors; the fusion is read from `<work>/fusion` when it exists.
`embed_catalog` writes `<work>/embeddings/items.parquet` and `items.json`
(layout in docs/ARCHITECTURE.md, "Embedding files").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor

from workbench.catalog import Catalog, read_catalog
from workbench.checkpoint import WEIGHTS_FILE
from workbench.device import autocast_dtype, resolve_device
from workbench.encoders.data import CatalogTensors, prepare_catalog
from workbench.encoders.fusion import Fusion, FusionOutput, fusion_encoder_digest, load_fusion
from workbench.encoders.model import (
    MODALITIES,
    EncoderConfig,
    MultimodalEncoder,
    load_encoder_model,
)
from workbench.errors import CheckpointError, ConfigError
from workbench.files import sha256_file, write_json_atomic, write_parquet_atomic
from workbench.media import load_audio, load_image
from workbench.progress import progress_bar


def _to_device(x: Tensor, device: torch.device) -> Tensor:
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


@torch.inference_mode()
def encode_items(
    model: MultimodalEncoder,
    tensors: CatalogTensors,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Per-modality item embeddings (N, d) float32 on the CPU (rows of missing media are
    computed but meaningless: use `tensors.masks()`), plus `query` for the catalog's queries."""
    dev = torch.device(device) if isinstance(device, str) else device or next(model.parameters()).device
    model.eval()
    amp = autocast_dtype(dev)
    out: dict[str, list[Tensor]] = {}
    n = tensors.n_items
    starts = range(0, n, batch_size)
    for start in progress_bar(starts, desc="embedding items", unit="batch", enabled=progress):
        sl = slice(start, start + batch_size)
        batch: dict[str, Tensor] = {}
        if "text" in model.towers:
            batch.update({f"text_{k}": _to_device(v[sl], dev) for k, v in tensors.text.items()})
        if "image" in model.towers and tensors.image_features is not None:
            batch["image_features"] = _to_device(tensors.image_features[sl], dev)
        elif "image" in model.towers:
            batch["image"] = _to_device(tensors.image[sl], dev)
        if "audio" in model.towers:
            batch["audio"] = _to_device(tensors.audio[sl], dev)
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            emb = model(batch)
        for m, e in emb.items():
            out.setdefault(m, []).append(e.float())
    result = {m: torch.cat(v).cpu() for m, v in out.items()}  # one device->host copy per modality
    if "text" in model.towers and tensors.query_ids:
        q: list[Tensor] = []
        nq = len(tensors.query_ids)
        for start in range(0, nq, batch_size):
            sl = slice(start, start + batch_size)
            batch = {f"query_{k}": _to_device(v[sl], dev) for k, v in tensors.query.items()}
            with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                q.append(model(batch)["query"].float())
        result["query"] = torch.cat(q).cpu()
    return result


class Encoder:
    """Trained towers (and optionally a fusion) for encoding queries and items."""

    def __init__(self, model: MultimodalEncoder, fusion: Fusion | None = None, device: str = "auto", source: Path | None = None, fusion_source: Path | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.fusion = fusion.to(self.device).eval() if fusion is not None else None
        self.source = source
        self.fusion_source = fusion_source
        self.config: EncoderConfig = model.config

    @property
    def d(self) -> int:
        return self.config.d

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.modalities

    def _tower(self, modality: str):
        if modality not in self.model.towers:
            raise ConfigError(f"this encoder has no {modality} tower (modalities: {', '.join(self.modalities)})")
        return self.model.towers[modality]

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """Texts -> (N, d), length-sorted batches, bf16 on CUDA, one host copy at the end."""
        return self._tower("text").encode(list(texts), batch_size=batch_size).float().cpu()

    @torch.inference_mode()
    def _run(self, modality: str, arrays: list[np.ndarray], dtype: torch.dtype, batch_size: int) -> Tensor:
        tower = self._tower(modality)
        amp = autocast_dtype(self.device)
        outs = []
        for start in range(0, len(arrays), batch_size):
            x = torch.from_numpy(np.stack(arrays[start : start + batch_size])).to(dtype)
            if modality == "image":
                x = x.permute(0, 3, 1, 2)
            with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                outs.append(tower(_to_device(x.contiguous(), self.device)).float())
        if not outs:
            return torch.empty(0, self.d)
        return torch.cat(outs).cpu()

    def encode_images(self, paths: Sequence[str | Path], batch_size: int = 256) -> Tensor:
        self._tower("image")  # fail before decoding anything
        size = self.config.image.image_size
        return self._run("image", [load_image(p, size=size) for p in paths], torch.uint8, batch_size)

    def encode_audio(self, paths: Sequence[str | Path], batch_size: int = 256) -> Tensor:
        self._tower("audio")
        a = self.config.audio
        waves = [load_audio(p, sample_rate=a.sample_rate, seconds=a.seconds) for p in paths]
        return self._run("audio", waves, torch.float32, batch_size)

    @torch.inference_mode()
    def fuse_with_weights(self, embeddings: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> FusionOutput:
        if self.fusion is None:
            raise ConfigError(f"no fusion saved next to {self.source} (expected a 'fusion' folder written by notebook 03)")
        emb = {m: e.to(self.device) for m, e in embeddings.items()}
        msk = {m: v.to(self.device) for m, v in masks.items()} if masks is not None else None
        out = self.fusion(emb, msk)
        return FusionOutput(out.fused.float().cpu(), out.weights.float().cpu())

    def fuse(self, embeddings: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> Tensor:
        """Fused (N, d) vectors from any subset of modality embeddings (e.g. a text+image query)."""
        return self.fuse_with_weights(embeddings, masks).fused


def load_encoder(
    folder: str | Path,
    fusion: str | Path | None = None,
    device: str = "auto",
    config: EncoderConfig | None = None,
    *,
    with_fusion: bool = True,
) -> Encoder:
    """The encoder saved in `folder` (`<work>/encoders`), with the fusion in `fusion` or `<work>/fusion`.

    `with_fusion=False` loads the towers alone (notebooks 02 and 03, which train
    before any fusion of theirs exists). A fusion recorded as trained on other tower
    weights (an earlier run's) is refused with a CheckpointError, never used.
    """
    folder = Path(folder)
    model = load_encoder_model(folder, config)
    fusion_dir = Path(fusion) if fusion is not None else folder.parent / "fusion"
    fused = None
    if with_fusion and (fusion is not None or (fusion_dir / WEIGHTS_FILE).exists()):
        trained_on = fusion_encoder_digest(fusion_dir)
        if trained_on is not None and trained_on != sha256_file(folder / WEIGHTS_FILE):
            raise CheckpointError(
                f"{fusion_dir}: this fusion was trained on other tower weights than {folder / WEIGHTS_FILE} "
                "(an earlier run's); re-run notebook 03 to train a fusion for these towers"
            )
        fused = load_fusion(fusion_dir, d=model.config.d)
    return Encoder(model, fused, device=device, source=folder, fusion_source=fusion_dir if fused is not None else None)


def _list_column(emb: Tensor, mask: Tensor) -> pl.Series:
    """list[f32] column from an (N, d) tensor, null where `mask` is False (vectorised)."""
    frame = pl.DataFrame({"v": emb.float().numpy(), "ok": mask.bool().numpy()})
    return frame.select(
        pl.when(pl.col("ok")).then(pl.col("v").cast(pl.List(pl.Float32))).otherwise(None).alias("v")
    ).to_series()


def write_embeddings(
    out_dir: str | Path,
    item_ids: Sequence[str],
    embeddings: dict[str, Tensor],
    masks: dict[str, Tensor],
    fused: FusionOutput | None,
    info: dict,
) -> Path:
    """items.parquet (item_id, one list[f32] per modality, fused, weight_<m>) + items.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols: dict[str, pl.Series] = {"item_id": pl.Series(list(item_ids), dtype=pl.Utf8)}
    modalities = [m for m in MODALITIES if m in embeddings]
    for m in modalities:
        cols[m] = _list_column(embeddings[m], masks[m])
    if fused is not None:
        any_present = torch.stack([masks[m] for m in modalities], 1).any(1)
        cols["fused"] = _list_column(fused.fused, any_present)
        fusion_modalities = info.get("fusion_modalities", modalities)
        for j, m in enumerate(fusion_modalities):
            w = fused.weights[:, j].float().numpy()
            cols[f"weight_{m}"] = pl.Series([float(x) if ok else None for x, ok in zip(w, masks[m].numpy(), strict=True)], dtype=pl.Float32)
    write_parquet_atomic(out_dir / "items.parquet", pl.DataFrame(cols))
    doc = {"n_items": len(item_ids), "modalities": modalities, **info}
    write_json_atomic(out_dir / "items.json", doc)
    return out_dir


def embed_catalog(
    catalog: Catalog | str | Path,
    encoder: Encoder | str | Path,
    out_dir: str | Path,
    batch_size: int = 512,
    cache_dir: str | Path | None = None,
    tensors: CatalogTensors | None = None,
    progress: bool = True,
) -> Path:
    """Embed every product (per modality and fused) in batches under inference mode; write
    `<out_dir>/items.parquet` + `items.json`. `out_dir` is normally `<work>/embeddings`."""
    enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder)
    cat = catalog if isinstance(catalog, Catalog) else read_catalog(catalog)
    if tensors is None:
        tensors = prepare_catalog(
            cat, enc.config, enc.model.text_tower, cache_dir=cache_dir, progress=progress,
            image_tower=enc.model.image_tower,
        )
    emb = encode_items(enc.model, tensors, batch_size=batch_size, device=enc.device, progress=progress)
    emb.pop("query", None)
    masks = {m: tensors.masks()[m] for m in emb}
    fused = None
    info: dict = {"d": enc.d, "checkpoint": str(enc.source) if enc.source else None, "catalog": str(cat.root)}
    if enc.fusion is not None:
        fused = enc.fuse_with_weights(emb, masks)
        info.update(
            fusion=enc.fusion.config.strategy,
            fusion_checkpoint=str(enc.fusion_source) if enc.fusion_source else None,
            fusion_modalities=list(enc.fusion.modalities),
        )
    else:
        # No trained fusion yet (notebook 02): the plain mean of the present modalities.
        stacked = torch.stack([emb[m] for m in emb], 1)
        present = torch.stack([masks[m] for m in emb], 1).float()
        weights = present / present.sum(1, keepdim=True).clamp(min=1)
        mean = torch.nn.functional.normalize((weights.unsqueeze(-1) * stacked).sum(1), dim=-1)
        fused = FusionOutput(mean, weights)
        info.update(fusion="mean", fusion_checkpoint=None, fusion_modalities=list(emb))
    return write_embeddings(out_dir, tensors.item_ids, emb, masks, fused, info)
