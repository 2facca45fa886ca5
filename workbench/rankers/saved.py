"""Saved rankers: `<work>/rankers/<name>` folders written by notebook 05, read by notebook 07.

`save_rankers` writes each fitted ranker with its training fingerprint;
`load_ranker(folder, expect=...)` rebuilds one from its folder alone and, given
what the caller evaluates, refuses a ranker trained on another catalog, split or
item universe (the folder layout is in `workbench.rankers.base`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from workbench.catalog.splits import Split
from workbench.checkpoint import DOC_FILE, WEIGHTS_FILE, read_checkpoint_doc, read_tensors
from workbench.rankers.base import KIND_PREFIX, Ranker
from workbench.rankers.fingerprint import TrainingFingerprint, check_fingerprint
from workbench.rankers.itemitem import EASERanker, ItemKNNRanker
from workbench.rankers.mf import BPRRanker
from workbench.rankers.popularity import PopularityRanker
from workbench.rankers.sequential import SequentialRanker

RANKER_CLASSES: dict[str, type[Ranker]] = {
    KIND_PREFIX + cls.name: cls for cls in (PopularityRanker, BPRRanker, SequentialRanker, EASERanker, ItemKNNRanker)
}


def load_ranker(folder: str | Path, device: str = "auto", expect: TrainingFingerprint | None = None) -> Ranker:
    """The ranker saved in `folder` by `Ranker.save`, on `device`.

    With `expect` (what this run evaluates: `TrainingFingerprint.of(catalog, split,
    item_ids)`), a ranker trained on other data is refused with a CheckpointError
    naming the folder and each part that differs, before any weights are read.
    """
    folder = Path(folder)
    doc = read_checkpoint_doc(folder, kind=tuple(RANKER_CLASSES))
    if expect is not None:
        saved = TrainingFingerprint.from_dict(doc["extra"].get("fingerprint") or {}, folder / DOC_FILE)
        check_fingerprint(folder, saved, expect)
    tensors = read_tensors(folder / WEIGHTS_FILE)
    return RANKER_CLASSES[doc["kind"]].from_checkpoint(folder, doc, tensors, device)


def save_rankers(rankers: Mapping[str, Ranker], folder: str | Path, *, catalog_fingerprint: str,
                 split: Split) -> list[Path]:
    """Save each fitted ranker to `folder/<name>` with its fingerprint; returns the folders."""
    folder = Path(folder)
    return [ranker.save(folder / name, catalog_fingerprint=catalog_fingerprint, split=split)
            for name, ranker in rankers.items()]
