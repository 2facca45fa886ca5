"""Audio tower: log-mel spectrogram or MFCC (torchaudio) feeding a small CNN.

Clips arrive as int16 (B, T) batches of a fixed length (padded or cropped when
the media cache is built, decoded with soundfile via `workbench.media`); the
features are computed on the device in float32 (STFTs do not run in bf16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.errors import ConfigError

FEATURES = ("logmel", "mfcc")


@dataclass
class AudioTowerConfig:
    sample_rate: int = 16_000
    seconds: float = 1.0
    features: str = "logmel"  # "logmel" or "mfcc"
    n_mels: int = 64
    n_mfcc: int = 20
    n_fft: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms
    channels: tuple[int, ...] = (32, 64, 128)
    input_stats: bool = True  # the head also sees each band's mean and std over time (the
    # average spectrum and its variation: partials and decay, learnt slowly by a small CNN)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.features not in FEATURES:
            raise ConfigError(f"audio.features={self.features!r}: expected one of {', '.join(FEATURES)}")
        if self.seconds <= 0 or self.sample_rate <= 0:
            raise ConfigError(f"audio.seconds={self.seconds}, audio.sample_rate={self.sample_rate}: expected > 0")
        if not self.channels:
            raise ConfigError("audio.channels: expected at least one conv stage")

    @property
    def n_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))


class AudioTower(nn.Module):
    """int16 or float waveforms (B, T) -> L2-normalised (B, d)."""

    def __init__(self, config: AudioTowerConfig, d: int) -> None:
        super().__init__()
        import torchaudio.transforms as T

        self.config = config
        mel = dict(n_fft=config.n_fft, hop_length=config.hop_length, n_mels=config.n_mels)
        if config.features == "mfcc":
            self.features = T.MFCC(sample_rate=config.sample_rate, n_mfcc=config.n_mfcc, melkwargs=mel)
            n_bins = config.n_mfcc
        else:
            self.features = T.MelSpectrogram(sample_rate=config.sample_rate, **mel)
            n_bins = config.n_mels
        self.norm = nn.BatchNorm2d(1)  # per-bin scales differ by orders of magnitude
        layers: list[nn.Module] = []
        c_in = 1
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c
        self.cnn = nn.Sequential(*layers)
        self.head = nn.Linear(c_in + (2 * n_bins if config.input_stats else 0), d)
        self.n_bins = n_bins

    def featurize(self, waves: Tensor) -> Tensor:
        x = waves.float()
        if waves.dtype == torch.int16:
            x = x / 32768.0
        with torch.autocast(x.device.type, enabled=False):
            spec = self.features(x)
            if self.config.features == "logmel":
                spec = torch.log(spec + 1e-6)
        return spec.unsqueeze(1)  # (B, 1, bins, frames)

    def forward(self, waves: Tensor) -> Tensor:
        spec = self.norm(self.featurize(waves))
        x = torch.flatten(F.adaptive_avg_pool2d(self.cnn(spec), 1), 1)
        if self.config.input_stats:
            bands = spec.squeeze(1)  # (B, bins, frames)
            x = torch.cat([x, bands.mean(2).to(x.dtype), bands.std(2).to(x.dtype)], dim=1)
        return F.normalize(self.head(x).float(), dim=-1)
