"""Rankers behind one interface: popularity, BPR matrix factorisation, SASRec-style sequences.

Fitted rankers are saved with `Ranker.save` / `save_rankers` and read back with `load_ranker`.
"""

from workbench.rankers.base import Ranker, Recommendations, load_item_embeddings
from workbench.rankers.fingerprint import TrainingFingerprint
from workbench.rankers.mf import BPRConfig, BPRRanker, BPRTask, MFModel
from workbench.rankers.popularity import PopularityRanker
from workbench.rankers.recommend import MODELS, RecommendConfig, make_ranker, run_recommend
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
    "MFModel",
    "PopularityRanker",
    "Ranker",
    "RecommendConfig",
    "Recommendations",
    "SASRecModel",
    "SequentialConfig",
    "SequentialRanker",
    "SequentialTask",
    "TrainingFingerprint",
    "load_item_embeddings",
    "load_ranker",
    "make_ranker",
    "run_recommend",
    "save_rankers",
]
