"""The multimodal encoder: one tower per modality in a shared d-dimensional space.

`MultimodalEncoder.forward(batch)` maps a batch from `MultimodalDataset` to a
dict of L2-normalised embeddings keyed by modality (plus `query` for query
texts, through the text tower). Missing modalities are *computed* on whatever
placeholder the batch holds (static shapes, no host sync) and masked out by the
task; nothing here decides what counts as present.

Saved encoders are a `workbench.checkpoint` folder (`model.safetensors` +
`model.json`, kind `multimodal_encoder`, the `EncoderConfig` as `model_config`);
frozen pretrained backbones are not copied into it (they are reloaded from their
package or local folder, named in the config), only a digest of their weights.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from workbench.catalog.schema import MODALITIES
from workbench.checkpoint import DOC_FILE, WEIGHTS_FILE, load_into, read_checkpoint, save_checkpoint
from workbench.encoders.audio import AudioTower, AudioTowerConfig
from workbench.encoders.image import ImageTower, ImageTowerConfig
from workbench.encoders.text import TextTower, TextTowerConfig
from workbench.errors import CheckpointError, ConfigError

ENCODER_KIND = "multimodal_encoder"


def check_modalities(names, where: str) -> tuple[str, ...]:
    """Validate modality names from a config: known, non-empty, no duplicates."""
    if isinstance(names, str):
        names = (names,)
    names = tuple(names)
    unknown = [m for m in names if m not in MODALITIES]
    if unknown:
        raise ConfigError(f"{where}: unknown modality {unknown[0]!r}; expected some of {', '.join(MODALITIES)}")
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"{where}={names}: expected a non-empty list without duplicates")
    return tuple(m for m in MODALITIES if m in names)  # canonical order


@dataclass
class EncoderConfig:
    d: int = 256
    modalities: tuple[str, ...] = MODALITIES
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    audio: AudioTowerConfig = field(default_factory=AudioTowerConfig)
    temperature: float = 0.07  # initial value of the learnable InfoNCE temperature

    def __post_init__(self) -> None:
        self.modalities = check_modalities(self.modalities, "EncoderConfig.modalities")
        if self.d < 2:
            raise ConfigError(f"EncoderConfig.d={self.d}: expected >= 2")
        if not 0 < self.temperature < 1:
            raise ConfigError(f"EncoderConfig.temperature={self.temperature}: expected in (0, 1)")

    @classmethod
    def for_profile(cls, profile: str, image_backbone: str = "scratch", **overrides) -> EncoderConfig:
        """ci: d=128 and tiny CNNs that train in seconds on a CPU; full: ResNet-18 and d=256.

        d=128 on ci, not smaller: the shared space holds category, colour, pattern,
        material, style and brand at once (92 values on the synthetic catalog), and at
        d=64 the heads had to drop some (probes of brand and colour 0.05-0.1 lower).

        `image_backbone="pretrained"` swaps the from-scratch ResNet for the frozen
        ImageNet EfficientNet-Lite0 (128 px on ci, its native 224 px on full).
        """
        if profile == "ci":
            base = cls(
                d=128,
                text=TextTowerConfig(head_hidden=256, max_length=48),
                image=ImageTowerConfig(image_size=32, width=8, blocks=(1, 1, 1), stem_stride=2),
                audio=AudioTowerConfig(seconds=1.0, n_mels=32, hop_length=400, channels=(8, 16, 16)),
            )
        elif profile == "full":
            base = cls()
        else:
            raise ConfigError(f"profile={profile!r}: expected ci or full")
        if image_backbone == "pretrained":
            size = 128 if profile == "ci" else 224
            base.image = ImageTowerConfig(image_size=size, backbone="efficientnet_lite0", pretrained=True, augment=False)
        elif image_backbone != "scratch":
            raise ConfigError(f"image_backbone={image_backbone!r}: expected scratch or pretrained")
        return base.replace(**overrides) if overrides else base

    def replace(self, **changes) -> EncoderConfig:
        data = self.to_dict()
        for key, value in changes.items():
            data[key] = asdict(value) if hasattr(value, "__dataclass_fields__") else value
        return EncoderConfig.from_dict(data)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["modalities"] = list(self.modalities)
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = "encoder config") -> EncoderConfig:
        data = dict(data)
        parts = {"text": TextTowerConfig, "image": ImageTowerConfig, "audio": AudioTowerConfig}
        _check_keys(cls, data, source)
        for key, sub in parts.items():
            if isinstance(data.get(key), dict):
                _check_keys(sub, data[key], f"{source} [{key}]")
                data[key] = sub(**data[key])
        if "modalities" in data:
            data["modalities"] = tuple(data["modalities"])
        return cls(**data)


def _check_keys(cls, data: dict, source: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; expected some of {', '.join(sorted(known))}")


class MultimodalEncoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        towers: dict[str, nn.Module] = {}
        if "text" in config.modalities:
            towers["text"] = TextTower(config.text, config.d)
        if "image" in config.modalities:
            towers["image"] = ImageTower(config.image, config.d)
        if "audio" in config.modalities:
            towers["audio"] = AudioTower(config.audio, config.d)
        self.towers = nn.ModuleDict(towers)
        # CLIP parameterisation: logits = exp(logit_scale) * cosine, clamped at 100 by the task.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))

    @property
    def text(self) -> TextTower:
        if "text" not in self.towers:
            raise ConfigError(f"this encoder has no text tower (modalities={self.config.modalities})")
        tower = self.towers["text"]
        assert isinstance(tower, TextTower)  # built as one in __init__
        return tower

    @property
    def text_tower(self) -> TextTower | None:
        """The text tower, or None without the text modality."""
        return self.text if "text" in self.towers else None

    @property
    def image_tower(self) -> ImageTower | None:
        """The image tower, or None without the image modality."""
        if "image" not in self.towers:
            return None
        tower = self.towers["image"]
        assert isinstance(tower, ImageTower)  # built as one in __init__
        return tower

    def _encode_text(self, batch: dict[str, Tensor], prefix: str) -> Tensor | None:
        if f"{prefix}_pooled" in batch:
            return self.text(pooled=batch[f"{prefix}_pooled"])
        if f"{prefix}_input_ids" in batch:
            return self.text(batch[f"{prefix}_input_ids"], batch[f"{prefix}_attention_mask"])
        return None

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if "text" in self.towers:
            for prefix in ("text", "query"):
                emb = self._encode_text(batch, prefix)
                if emb is not None:
                    out[prefix] = emb
        if "image" in self.towers and "image_features" in batch:  # cached frozen-backbone features
            image = self.towers["image"]
            assert isinstance(image, ImageTower)  # built as one in __init__
            out["image"] = image.project(batch["image_features"])
        elif "image" in self.towers and "image" in batch:
            out["image"] = self.towers["image"](batch["image"])
        if "audio" in self.towers and "audio" in batch:
            out["audio"] = self.towers["audio"](batch["audio"])
        return out

    def frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of frozen pretrained backbones, which are reloaded from their
        own package or folder rather than copied into every checkpoint."""
        skip = []
        if "text" in self.towers and self.config.text.frozen and not self.config.text.tiny:
            skip.append("towers.text.backbone.")
        if "image" in self.towers and self.config.image.frozen:
            skip.append("towers.image.backbone.")
        return tuple(skip)

    def state_to_save(self) -> dict[str, Tensor]:
        """Everything but the frozen pretrained backbones (see `frozen_prefixes`)."""
        skip = self.frozen_prefixes()
        return {k: v for k, v in self.state_dict().items() if not (skip and k.startswith(skip))}


def state_digest(module: nn.Module) -> str:
    """A short sha256 of a module's tensors (names, values): which weights a backbone holds."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def _frozen_digests(model: MultimodalEncoder) -> dict[str, str]:
    state = model.state_dict()
    return {
        prefix: state_digest(model.get_submodule(prefix.rstrip(".")))
        for prefix in model.frozen_prefixes()
        if any(k.startswith(prefix) for k in state)
    }


def save_encoder(model: MultimodalEncoder, folder: str | Path, extra: dict | None = None) -> Path:
    """Save a trained encoder (weights + config) to `folder`, typically `<work>/encoders`.

    Frozen pretrained backbones are not copied (they reload from their package or
    folder); the digest of their weights is recorded so a load onto other weights fails.
    """
    return save_checkpoint(folder, model.state_to_save(), kind=ENCODER_KIND, model_config=model.config.to_dict(),
                           extra={"frozen_backbones": _frozen_digests(model), **(extra or {})})


def load_encoder_model(folder: str | Path, config: EncoderConfig | None = None) -> MultimodalEncoder:
    """Rebuild a `MultimodalEncoder` from a folder written by `save_encoder`.

    A `config` given by the caller must agree with the saved one on `d`.
    """
    folder = Path(folder)
    state, doc = read_checkpoint(folder, kind=ENCODER_KIND)
    cfg_file = folder / DOC_FILE
    try:
        saved = EncoderConfig.from_dict(doc["model_config"], source=str(cfg_file))
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"{cfg_file}: invalid encoder config ({e})") from e
    if config is not None and config.d != saved.d:
        raise CheckpointError(f"{folder / WEIGHTS_FILE}: trained with d={saved.d}, but the config asks for d={config.d}")
    model = MultimodalEncoder(config or saved)
    load_into(model, state, folder / WEIGHTS_FILE, aliases=doc["aliases"], allow_missing=model.frozen_prefixes())
    recorded = doc["extra"].get("frozen_backbones", {})
    for prefix, digest in _frozen_digests(model).items():
        if prefix in recorded and recorded[prefix] != digest:
            raise CheckpointError(
                f"{cfg_file}: the heads were trained on a frozen backbone ({prefix.rstrip('.')}) whose weights "
                f"had digest {recorded[prefix]}; the weights loaded now have {digest}. Retrain (notebook 02) "
                "or restore the backbone's original weights"
            )
    return model.eval()
