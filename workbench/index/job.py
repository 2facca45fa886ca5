"""`workbench index`: build and save the index of a work folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.index.build import build_index
from workbench.index.config import IndexConfig
from workbench.index.embeddings import read_item_embeddings


@dataclass
class IndexJob:
    """What `workbench index` does: build an index over `<work>/embeddings/items.parquet`
    (column `column`) with `config` (default: `IndexConfig.for_size`) and save it to
    `<work>/index` (or `out_dir`)."""

    work_dir: str
    column: str = "fused"
    config: IndexConfig | None = None
    out_dir: str | None = None


def build_work_index(job: IndexJob) -> Path:
    """Build and save the index of a work folder; returns the index folder."""
    emb = read_item_embeddings(Path(job.work_dir) / "embeddings", job.column)
    config = job.config or IndexConfig.for_size(len(emb.item_ids))
    index = build_index(emb.item_ids, emb.vectors, config, items=emb.info)
    return index.save(Path(job.out_dir) if job.out_dir else Path(job.work_dir) / "index")
