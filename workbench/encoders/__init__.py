"""Text, image and audio towers aligned contrastively, their fusion, and embedding export.

Modules, one job each: `text`, `image`, `audio` (towers), `model` (the
multimodal encoder, its config and checkpoints), `data` (media cache, text
features, datasets), `alignment` (the InfoNCE task), `fusion` (three fusion
strategies), `export` (inference `Encoder`, `load_encoder`, `embed_catalog`),
`analysis` (retrieval ablations and attribute probes for the notebooks).
"""

from workbench.encoders.alignment import (
    AlignmentConfig,
    AlignmentTask,
    positive_keys,
    symmetric_info_nce,
)
from workbench.encoders.data import (
    CatalogTensors,
    EmbeddingPairDataset,
    MultimodalDataset,
    build_media_cache,
    prepare_catalog,
    product_texts,
    query_item_pairs,
)
from workbench.encoders.export import (
    Encoder,
    embed_catalog,
    encode_items,
    load_encoder,
    write_embeddings,
)
from workbench.encoders.fusion import (
    STRATEGIES,
    FusionConfig,
    FusionModel,
    FusionOutput,
    load_fusion,
    make_fusion,
    save_fusion,
)
from workbench.encoders.model import (
    MODALITIES,
    EncoderConfig,
    MultimodalEncoder,
    load_encoder_model,
    save_encoder,
)

__all__ = [
    "MODALITIES",
    "STRATEGIES",
    "AlignmentConfig",
    "AlignmentTask",
    "CatalogTensors",
    "EmbeddingPairDataset",
    "Encoder",
    "EncoderConfig",
    "FusionConfig",
    "FusionModel",
    "FusionOutput",
    "MultimodalDataset",
    "MultimodalEncoder",
    "build_media_cache",
    "embed_catalog",
    "encode_items",
    "load_encoder",
    "load_encoder_model",
    "load_fusion",
    "make_fusion",
    "positive_keys",
    "prepare_catalog",
    "product_texts",
    "query_item_pairs",
    "save_encoder",
    "save_fusion",
    "symmetric_info_nce",
    "write_embeddings",
]
