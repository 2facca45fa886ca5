"""Rankers behind one interface: popularity, BPR matrix factorisation, SASRec-style sequences."""

from workbench.rankers.base import Ranker, Recommendations, load_item_embeddings
from workbench.rankers.mf import BPRConfig, BPRRanker, BPRTask, MFModel
from workbench.rankers.popularity import PopularityRanker
from workbench.rankers.recommend import MODELS, RecommendConfig, make_ranker, run_recommend
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
    "load_item_embeddings",
    "make_ranker",
    "run_recommend",
]
