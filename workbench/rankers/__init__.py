"""Rankers behind one interface: popularity, BPR, SASRec-style sequences, EASE and item-kNN.

Fitted rankers are saved with `Ranker.save` / `save_rankers` and read back with
`load_ranker`; `MODELS` names them (`workbench recommend --model NAME`) and
`item_content` builds the content features that `SequentialRanker` reads.
Choosing hyperparameters and `workbench recommend` combine rankers with
evaluation, so they live in `workbench.experiments` (tuning, recommend).
"""

from workbench.rankers.base import Ranker, Recommendations, load_item_embeddings
from workbench.rankers.features import ContentConfig, item_content
from workbench.rankers.fingerprint import TrainingFingerprint
from workbench.rankers.itemitem import EASEConfig, EASERanker, ItemKNNConfig, ItemKNNRanker
from workbench.rankers.mf import BPRConfig, BPRRanker, BPRTask, MFModel
from workbench.rankers.popularity import PopularityRanker
from workbench.rankers.registry import MODELS, RankerSpec, make_ranker
from workbench.rankers.saved import load_ranker, save_rankers
from workbench.rankers.sequential import (
    SASRecModel,
    SequentialConfig,
    SequentialRanker,
    SequentialTask,
)

__all__ = [
    "MODELS",
    "BPRConfig",
    "BPRRanker",
    "BPRTask",
    "ContentConfig",
    "EASEConfig",
    "EASERanker",
    "ItemKNNConfig",
    "ItemKNNRanker",
    "MFModel",
    "PopularityRanker",
    "Ranker",
    "RankerSpec",
    "Recommendations",
    "SASRecModel",
    "SequentialConfig",
    "SequentialRanker",
    "SequentialTask",
    "TrainingFingerprint",
    "item_content",
    "load_item_embeddings",
    "load_ranker",
    "make_ranker",
    "save_rankers",
]
