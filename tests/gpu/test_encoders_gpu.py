"""Encoders on CUDA: bf16 autocast paths agree with fp32 CPU, training steps run on the GPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))


def test_text_encode_bf16_matches_cpu():
    from workbench.encoders import EncoderConfig, MultimodalEncoder
    from workbench.encoders.text import TextTowerConfig

    torch.manual_seed(0)
    model = MultimodalEncoder(EncoderConfig(d=32, modalities=("text",), text=TextTowerConfig())).eval()
    texts = ["red striped wooden chair", "a glass kettle by Juniper", "x"] * 20
    cpu = model.text.encode(texts).float()
    gpu = model.cuda().text.encode(texts).float().cpu()
    assert torch.nn.functional.cosine_similarity(cpu, gpu).min() > 0.99


def test_towers_train_on_gpu_and_export(tmp_path):
    from encoder_fixtures import make_tiny_catalog, tiny_config

    from workbench.encoders import embed_catalog, load_encoder
    from workbench.encoders.recipes import TowerTraining, train_towers
    from workbench.train import TrainConfig

    catalog = make_tiny_catalog(tmp_path)
    cfg = TowerTraining(encoder=tiny_config(), train=TrainConfig(epochs=2, batch_size=4, progress=False))
    run = train_towers(catalog, tmp_path / "work", cfg, progress=False)
    assert all(h["loss"] == h["loss"] for h in run.history)  # finite
    enc = load_encoder(tmp_path / "work" / "encoders")
    assert enc.device.type == "cuda"
    embed_catalog(catalog, enc, tmp_path / "work" / "embeddings", cache_dir=tmp_path / "work" / "cache", progress=False)
    assert (tmp_path / "work" / "embeddings" / "items.parquet").exists()
