"""Ready-made training runs for the notebooks: align the towers, then train a fusion.

Both run `workbench.train.fit` (the one training loop) with the alignment task;
this module only wires catalog tensors, the query split and the output folders:
`<work>/encoders` (the trained towers, `load_encoder` reads it; epoch checkpoints
under `<work>/encoders/checkpoints`), `<work>/fusion` (the chosen fusion) and
`<work>/cache` (decoded media and the frozen text backbone's pooled outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.catalog import Catalog, read_catalog
from workbench.catalog.splits import DEFAULT_VALIDATION_FRACTION
from workbench.device import resolve_device
from workbench.encoders.alignment import AlignmentConfig, AlignmentTask, positive_keys
from workbench.encoders.data import (
    CatalogTensors,
    EmbeddingPairDataset,
    MultimodalDataset,
    collate_batch,
    prepare_catalog,
    query_item_pairs,
)
from workbench.encoders.export import encode_items
from workbench.encoders.fusion import Fusion, FusionConfig, FusionModel
from workbench.encoders.image import train_transform
from workbench.encoders.model import EncoderConfig, MultimodalEncoder, save_encoder
from workbench.encoders.text import TextTower
from workbench.train import TrainConfig, fit


@dataclass
class TowerTraining:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, batch_size=256, lr=1e-3))
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    test_fraction: float = 0.2  # share of queries held out for the claims (workbench.catalog.splits)
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION  # held out for choosing, never trained on
    split_seed: int = 0
    checkpoints: bool = True  # epoch checkpoints under <work>/encoders/checkpoints (resumable)


@dataclass
class TowerRun:
    model: MultimodalEncoder
    tensors: CatalogTensors
    history: list[dict[str, Any]]
    train_pairs: np.ndarray  # (query index, item index, relevance) of training queries
    validation_pairs: np.ndarray  # of the validation queries (choices are made on them)
    test_pairs: np.ndarray
    embeddings: dict[str, torch.Tensor]  # per-modality item embeddings + "query", on the CPU
    encoder_dir: Path


def train_towers(
    catalog: Catalog | str | Path,
    work_dir: str | Path,
    config: TowerTraining | None = None,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    progress: bool = True,
    encoder_dir: str | Path | None = None,
) -> TowerRun:
    """Align the text, image and audio towers on a catalog and save them to `encoder_dir`
    (default `<work>/encoders`, the towers later notebooks load); caches stay in `<work>/cache`."""
    config = config or TowerTraining()
    cat = catalog if isinstance(catalog, Catalog) else read_catalog(catalog)
    work = Path(work_dir)
    out = Path(encoder_dir) if encoder_dir is not None else work / "encoders"
    torch.manual_seed(config.train.seed)  # tower initialisation is part of the run's seed
    model = MultimodalEncoder(config.encoder)
    device = resolve_device(config.train.device)
    model.to(device)  # the frozen text backbone runs once, on the training device
    text_tower, image_tower = model.text_tower, model.image_tower
    tensors = prepare_catalog(cat, config.encoder, text_tower, cache_dir=work / "cache", progress=progress,
                              image_tower=image_tower)
    if text_tower is not None:
        init_text_head(text_tower, tensors)
    train_pairs, validation_pairs, test_pairs = (
        query_item_pairs(cat, tensors.item_ids, tensors.query_ids, part, test_fraction=config.test_fraction,
                         validation_fraction=config.validation_fraction, seed=config.split_seed)
        for part in ("train", "validation", "test")
    )
    image_tf = train_transform(config.encoder.image) if "image" in config.encoder.modalities else None
    dataset = MultimodalDataset(tensors, config.encoder.modalities, train_pairs, image_transform=image_tf)
    task = AlignmentTask(config.alignment, positive_keys(train_pairs[:, :2], tensors.n_items), tensors.n_items)
    train_cfg = config.train
    if config.checkpoints and train_cfg.out_dir is None:
        train_cfg = replace(train_cfg, out_dir=str(out / "checkpoints"))
    train_cfg = replace(train_cfg, progress=progress and train_cfg.progress)
    result = fit(model, task, dataset, train_cfg, model_config=config.encoder.to_dict(), callbacks=callbacks,
                 collate_fn=collate_batch)
    trained = result.model
    assert isinstance(trained, MultimodalEncoder)  # fit returns the model it trained
    save_encoder(trained, out, extra={"epochs": len(result.history), "catalog": str(cat.root)})
    embeddings = encode_items(trained, tensors, batch_size=max(256, train_cfg.batch_size), progress=False)
    return TowerRun(trained.eval(), tensors, result.history, train_pairs, validation_pairs, test_pairs,
                    embeddings, out)


def init_text_head(tower: TextTower, tensors: CatalogTensors, max_texts: int = 20_000) -> bool:
    """Start the text head from the catalog's own texts (`TextTowerConfig.head_init`).

    Reads the cached pooled outputs of a frozen backbone; a fine-tuned one pools (a
    seeded sample of at most `max_texts` of) the product texts once. Products without
    text are left out. Returns whether the head was initialised.
    """
    if tower.config.head_init == "random":
        return False
    rows = torch.nonzero(tensors.text_mask).flatten()
    if len(rows) < 2:
        return False
    if len(rows) > max_texts:
        gen = torch.Generator().manual_seed(0)
        rows = rows[torch.randperm(len(rows), generator=gen)[:max_texts]].sort().values
    if "pooled" in tensors.text:
        pooled = tensors.text["pooled"][rows]
    else:
        pooled = tower.pool_texts([tensors.texts[i] for i in rows.tolist()])
    return tower.init_head(pooled)


@dataclass
class FusionTraining:
    fusion: FusionConfig = field(default_factory=FusionConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, batch_size=256, lr=3e-3))


def train_fusion(
    embeddings: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    train_pairs: np.ndarray,
    config: FusionTraining,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    progress: bool = True,
) -> tuple[Fusion, list[dict[str, Any]]]:
    """Train one fusion on fixed tower outputs: training queries <-> fused relevant products."""
    torch.manual_seed(config.train.seed)
    modalities = [m for m in config.fusion.modalities if m in embeddings]
    items = {m: embeddings[m] for m in modalities}
    dataset = EmbeddingPairDataset(items, masks, embeddings["query"], train_pairs)
    model = FusionModel(config.fusion)
    n_items = len(next(iter(items.values())))
    task = AlignmentTask(
        AlignmentConfig(modalities=tuple(modalities), query_targets=("fused",)),
        positive_keys(train_pairs[:, :2], n_items),
        n_items,
    )
    train_cfg = replace(config.train, progress=progress and config.train.progress)
    result = fit(model, task, dataset, train_cfg, model_config=config.fusion.to_dict(), callbacks=callbacks,
                 collate_fn=collate_batch)
    trained = result.model
    assert isinstance(trained, FusionModel)  # fit returns the model it trained
    fusion = trained.fusion.cpu().eval()
    return fusion, result.history
