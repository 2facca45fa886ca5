"""Rankers behind one interface: popularity, BPR, SASRec-style sequences, EASE and item-kNN.

Fitted rankers are saved with `Ranker.save` / `save_rankers` and read back with
`load_ranker`; `MODELS` names them (`workbench recommend --model NAME`),
`tune_ranker` chooses their hyperparameters on validation, and
`item_content` builds the content features that `SequentialRanker` reads.
"""

from workbench.rankers.base import Ranker, Recommendations, load_item_embeddings
from workbench.rankers.features import ContentConfig, item_content
from workbench.rankers.fingerprint import TrainingFingerprint
from workbench.rankers.itemitem import EASEConfig, EASERanker, ItemKNNConfig, ItemKNNRanker
from workbench.rankers.mf import BPRConfig, BPRRanker, BPRTask, MFModel
from workbench.rankers.popularity import PopularityRanker
from workbench.rankers.recommend import RecommendConfig, run_recommend
from workbench.rankers.registry import MODELS, RankerSpec, make_ranker
from workbench.rankers.saved import load_ranker, save_rankers
from workbench.rankers.sequential import (
    SASRecModel,
    SequentialConfig,
    SequentialRanker,
    SequentialTask,
)
from workbench.rankers.tuning import TuneResult, tune_ranker, validation_split

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
    "RecommendConfig",
    "Recommendations",
    "SASRecModel",
    "SequentialConfig",
    "SequentialRanker",
    "SequentialTask",
    "TrainingFingerprint",
    "TuneResult",
    "item_content",
    "load_item_embeddings",
    "load_ranker",
    "make_ranker",
    "run_recommend",
    "save_rankers",
    "tune_ranker",
    "validation_split",
]
