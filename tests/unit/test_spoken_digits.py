"""FSDD check plumbing on tiny synthetic recordings (tones whose pitch is the digit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from workbench.encoders.audio import AudioTowerConfig
from workbench.encoders.spoken_digits import (
    SpokenDigitConfig,
    list_recordings,
    load_fsdd,
    retrieval_split,
    spoken_digit_retrieval,
)
from workbench.errors import CatalogError, ConfigError
from workbench.train import TrainConfig


@pytest.fixture
def tiny_fsdd(tmp_path: Path) -> Path:
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(2400) / 8000.0  # 0.3 s at 8 kHz, as FSDD
    for speaker in ("ann", "bob", "cy"):
        for digit in range(10):
            for take in range(4):
                tone = 0.3 * np.sin(2 * np.pi * (300 + 150 * digit) * t) + 0.02 * rng.standard_normal(t.size)
                sf.write(rec / f"{digit}_{speaker}_{take}.wav", (tone * 32767).astype(np.int16), 8000, subtype="PCM_16")
    (rec / "README.txt").write_text("not a recording")
    (rec / "notes.wav").write_bytes(b"")  # does not match the naming scheme: ignored
    return tmp_path / "fsdd"


def test_listing_loading_and_split(tiny_fsdd: Path) -> None:
    rows = list_recordings(tiny_fsdd)
    assert len(rows) == 120 and rows[0][1:] == (0, "ann", 0)
    clips = load_fsdd(tiny_fsdd, {"cy"}, AudioTowerConfig(seconds=0.5))
    assert clips.waves.shape == (40, 8000) and clips.waves.dtype == torch.int16  # resampled to 16 kHz, padded
    gallery, queries = retrieval_split(clips, 2, 2)
    assert len(gallery) == len(queries) == 20 and not set(gallery) & set(queries)
    assert (clips.takes[gallery] < 2).all() and (clips.takes[queries] >= 2).all()
    with pytest.raises(ConfigError, match="held-out clips"):
        retrieval_split(clips, 3, 2)
    with pytest.raises(CatalogError, match="recordings"):
        list_recordings(tiny_fsdd / "nowhere")


def test_training_beats_chance_on_tones(tiny_fsdd: Path, one_thread: None) -> None:
    cfg = SpokenDigitConfig(
        test_speaker="cy", gallery_per_digit=2, queries_per_digit=2, max_train_per_digit_speaker=None, d=16,
        audio=AudioTowerConfig(seconds=0.3, n_mels=24, channels=(8, 16)),
        train=TrainConfig(epochs=3, batch_size=16, lr=5e-3, num_workers=0, progress=False),
    )
    result = spoken_digit_retrieval(tiny_fsdd, cfg)
    assert result["chance_recall@10"] == pytest.approx(0.5)  # 10 of a 20-clip gallery
    assert result["train_clips"] == 80 and result["train_speakers"] == ["ann", "bob"]
    assert result["recall@10"] >= 0.9  # pitch separates the digits perfectly
    with pytest.raises(ConfigError, match="test_speaker='zed'"):
        spoken_digit_retrieval(tiny_fsdd, SpokenDigitConfig(test_speaker="zed"))
