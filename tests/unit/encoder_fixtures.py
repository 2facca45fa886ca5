"""A tiny catalog with missing media, for the encoder tests (built with write_catalog)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import soundfile as sf
from PIL import Image

from workbench.catalog import write_catalog
from workbench.encoders import EncoderConfig
from workbench.encoders.audio import AudioTowerConfig
from workbench.encoders.image import ImageTowerConfig
from workbench.encoders.text import TextTowerConfig

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]


def tiny_config(**kw) -> EncoderConfig:
    """Small everything: a random 2-layer BERT, a 1-stage ResNet, 0.25 s clips."""
    base = dict(
        d=16,
        text=TextTowerConfig(tiny=True, head_hidden=0, max_length=16),
        image=ImageTowerConfig(image_size=16, width=8, blocks=(1,), augment=False),
        audio=AudioTowerConfig(seconds=0.25, n_mels=16, n_fft=256, hop_length=128, channels=(8,)),
    )
    base.update(kw)
    return EncoderConfig(**base)


def make_tiny_catalog(root: Path, n: int = 8) -> Path:
    """n products; products 1 and 5 lack an image, 2 and 6 lack audio; 6 queries with qrels."""
    media = root / "src_media"
    media.mkdir(parents=True)
    rows = []
    for i in range(n):
        img = aud = None
        if i % 4 != 1:
            arr = np.zeros((20, 20, 3), dtype=np.uint8)
            arr[:] = COLOURS[i % 4]
            arr[:: 4 + i % 3] = 255  # a stripe pattern that differs by item
            Image.fromarray(arr).save(media / f"img{i}.png")
            img = f"media/img{i}.png"
        if i % 4 != 2:
            t = np.arange(4000) / 8000
            sf.write(media / f"a{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)).astype(np.float32), 8000, subtype="PCM_16")
            aud = f"media/a{i}.wav"
        rows.append(
            dict(item_id=f"p{i}", title=f"product {i} brand{i % 3}", description=f"a {['red', 'green', 'blue', 'yellow'][i % 4]} thing",
                 category="a/b", brand=f"brand{i % 3}", price=1.0 + i, attributes=None, image=img, audio=aud)
        )
    products = pl.DataFrame(rows)
    queries = pl.DataFrame({"query_id": [f"q{j}" for j in range(6)], "text": [f"brand{j % 3} thing {j}" for j in range(6)],
                            "user_id": [None] * 6, "image": [None] * 6, "audio": [None] * 6},
                           schema={"query_id": pl.Utf8, "text": pl.Utf8, "user_id": pl.Utf8, "image": pl.Utf8, "audio": pl.Utf8})
    qrels = pl.DataFrame({"query_id": [f"q{j}" for j in range(6) for _ in range(2)],
                          "item_id": [f"p{(j + k * 3) % n}" for j in range(6) for k in range(2)],
                          "relevance": [3, 1] * 6}).with_columns(pl.col("relevance").cast(pl.Int8))
    out = root / "cat"
    write_catalog(out, products=products, queries=queries, qrels=qrels, media_from=media, name="tiny")
    return out
