"""A real-audio check for the audio tower: spoken-digit retrieval on FSDD.

The Free Spoken Digit Dataset (`recordings/{digit}_{speaker}_{index}.wav`, 8 kHz
mono) is real speech, not product audio. It proves the audio path (decoding,
resampling to 16 kHz with `workbench.media.load_audio`, log-mel features, the
CNN of `workbench.encoders.audio.AudioTower`, the shared training loop) learns
from real recordings.

Protocol: train on every speaker but `test_speaker`, with a cross-entropy over
cosine similarities to 10 learned digit prototypes (the tower's embeddings are
what is trained; the prototypes are only the training target). Evaluate on the
held-out speaker: a gallery of `gallery_per_digit` clips per digit and
`queries_per_digit` other clips per digit as queries; each query's relevant
items are the gallery clips of the same digit. With 10 relevant items in a
gallery of 100, a random ranking has Recall@10 = 0.1.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from workbench.encoders.audio import AudioTower, AudioTowerConfig
from workbench.errors import CatalogError, ConfigError
from workbench.media import load_audio
from workbench.metrics import ranking_metrics
from workbench.progress import progress_bar
from workbench.train import TrainConfig, fit

_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


@dataclass
class SpokenDigitConfig:
    test_speaker: str = "theo"
    train_speakers: tuple[str, ...] | None = None  # None: every other speaker
    # defaults are the CPU check (800 clips, 6 short epochs, ~45 s on 2 shared cores);
    # None and more epochs use all 2,500 training clips
    max_train_per_digit_speaker: int | None = 16
    gallery_per_digit: int = 10
    queries_per_digit: int = 10
    d: int = 32
    audio: AudioTowerConfig = field(
        default_factory=lambda: AudioTowerConfig(seconds=0.8, n_mels=40, channels=(16, 32, 64))
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=6, batch_size=32, lr=5e-3, num_workers=0, progress=False)
    )
    temperature: float = 0.1


@dataclass
class FSDDClips:
    waves: Tensor  # (N, T) int16 at the tower's sample rate
    digits: np.ndarray  # (N,) int
    speakers: np.ndarray  # (N,) str
    takes: np.ndarray  # (N,) int


def list_recordings(root: str | Path) -> list[tuple[Path, int, str, int]]:
    """(path, digit, speaker, take) of every FSDD recording under `root`, sorted."""
    folder = Path(root) / "recordings"
    if not folder.is_dir():
        raise CatalogError(f"{folder}: missing; expected FSDD's recordings/{{digit}}_{{speaker}}_{{index}}.wav")
    out = []
    for path in sorted(folder.glob("*.wav")):
        m = _NAME.match(path.name)
        if m:
            out.append((path, int(m.group(1)), m.group(2), int(m.group(3))))
    if not out:
        raise CatalogError(f"{folder}: no files named {{digit}}_{{speaker}}_{{index}}.wav")
    return out


def load_fsdd(
    root: str | Path,
    speakers: set[str],
    audio: AudioTowerConfig,
    *,
    max_per_digit_speaker: int | None = None,
    progress: bool = False,
) -> FSDDClips:
    """Decode, resample and pad/crop the chosen speakers' clips to int16 (N, T)."""
    rows = [r for r in list_recordings(root) if r[2] in speakers]
    if max_per_digit_speaker is not None:
        rows = [r for r in rows if r[3] < max_per_digit_speaker]
    if not rows:
        raise CatalogError(f"{root}: no recordings of speakers {sorted(speakers)}")
    waves = np.zeros((len(rows), audio.n_samples), dtype=np.int16)
    for i, (path, *_rest) in enumerate(progress_bar(rows, desc="FSDD clips", enabled=progress)):
        wave = load_audio(path, sample_rate=audio.sample_rate, seconds=audio.seconds)
        waves[i] = np.clip(wave * 32767.0, -32768, 32767).astype(np.int16)
    return FSDDClips(
        waves=torch.from_numpy(waves),
        digits=np.array([r[1] for r in rows]),
        speakers=np.array([r[2] for r in rows]),
        takes=np.array([r[3] for r in rows]),
    )


class _ClipDataset(Dataset):
    def __init__(self, clips: FSDDClips):
        self.waves = clips.waves
        self.digits = torch.from_numpy(clips.digits).long()

    def __len__(self) -> int:
        return self.waves.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"audio": self.waves[i], "digit": self.digits[i]}


class DigitModel(nn.Module):
    """The audio tower plus 10 learned digit prototypes (the training target only)."""

    def __init__(self, audio: AudioTowerConfig, d: int, temperature: float):
        super().__init__()
        self.tower = AudioTower(audio, d)
        self.prototypes = nn.Parameter(torch.randn(10, d) * 0.1)
        self.temperature = temperature

    def forward(self, waves: Tensor) -> Tensor:
        return self.tower(waves)

    def logits(self, emb: Tensor) -> Tensor:
        return emb @ F.normalize(self.prototypes, dim=-1).T / self.temperature


class DigitTask:
    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        assert isinstance(model, DigitModel)  # the model spoken_digit_retrieval trains with this task
        logits = model.logits(model(batch["audio"]))
        loss = F.cross_entropy(logits.float(), batch["digit"])
        return {"loss": loss, "acc": (logits.argmax(1) == batch["digit"]).float().mean()}


@torch.no_grad()
def embed(model: nn.Module, waves: Tensor, batch_size: int = 256) -> Tensor:
    model.eval()
    device = next(model.parameters()).device
    out = [model(waves[i : i + batch_size].to(device, non_blocking=True)).float() for i in range(0, len(waves), batch_size)]
    return torch.cat(out).cpu()


def retrieval_split(clips: FSDDClips, gallery_per_digit: int, queries_per_digit: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of gallery and query clips: the lowest takes per digit go to the gallery."""
    gallery: list[int] = []
    queries: list[int] = []
    for digit in range(10):
        idx = np.flatnonzero(clips.digits == digit)
        idx = idx[np.argsort(clips.takes[idx], kind="stable")]
        if len(idx) < gallery_per_digit + queries_per_digit:
            raise ConfigError(
                f"digit {digit}: {len(idx)} held-out clips, need {gallery_per_digit + queries_per_digit}"
            )
        gallery.extend(idx[:gallery_per_digit])
        queries.extend(idx[gallery_per_digit : gallery_per_digit + queries_per_digit])
    return np.array(gallery), np.array(queries)


def digit_retrieval_metrics(q_emb: Tensor, q_digits: np.ndarray, g_emb: Tensor, g_digits: np.ndarray, k: int = 10) -> dict:
    """Recall/nDCG@k of same-digit gallery clips for each query clip (cosine ranking)."""
    scores = (F.normalize(q_emb, dim=1) @ F.normalize(g_emb, dim=1).T).numpy()
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rel = sp.csr_matrix((q_digits[:, None] == g_digits[None, :]).astype(np.float32))
    m = ranking_metrics(ranked, rel, ks=(k,))
    # a random ranking puts k*R/N relevant items in the top k on average: recall k/N
    chance = k / len(g_digits)
    return {**{key: float(v) for key, v in m.items()}, "chance_recall": chance}


def spoken_digit_retrieval(root: str | Path, config: SpokenDigitConfig | None = None) -> dict:
    """Train the audio tower on FSDD (all speakers but one) and score digit retrieval on the held-out one."""
    cfg = config or SpokenDigitConfig()
    recordings = list_recordings(root)
    all_speakers = sorted({r[2] for r in recordings})
    if cfg.test_speaker not in all_speakers:
        raise ConfigError(f"test_speaker={cfg.test_speaker!r}: FSDD here has {all_speakers}")
    train_speakers = set(cfg.train_speakers or [s for s in all_speakers if s != cfg.test_speaker])
    if cfg.test_speaker in train_speakers:
        raise ConfigError(f"test_speaker={cfg.test_speaker!r} is also a training speaker")
    train = load_fsdd(root, train_speakers, cfg.audio, max_per_digit_speaker=cfg.max_train_per_digit_speaker)
    test = load_fsdd(root, {cfg.test_speaker}, cfg.audio)
    torch.manual_seed(cfg.train.seed)
    model = DigitModel(cfg.audio, cfg.d, cfg.temperature)
    g_idx, q_idx = retrieval_split(test, cfg.gallery_per_digit, cfg.queries_per_digit)
    untrained = digit_retrieval_metrics(
        embed(model, test.waves[q_idx]), test.digits[q_idx], embed(model, test.waves[g_idx]), test.digits[g_idx]
    )
    result = fit(model, DigitTask(), _ClipDataset(train), cfg.train, model_config={"d": cfg.d, "audio": asdict(cfg.audio)})
    trained = result.model
    g_emb, q_emb = embed(trained, test.waves[g_idx]), embed(trained, test.waves[q_idx])
    metrics = digit_retrieval_metrics(q_emb, test.digits[q_idx], g_emb, test.digits[g_idx])
    return {
        "recall@10": metrics["recall@10"],
        "ndcg@10": metrics["ndcg@10"],
        "chance_recall@10": metrics["chance_recall"],
        "untrained_recall@10": untrained["recall@10"],
        "train_clips": int(len(train.digits)),
        "train_speakers": sorted(train_speakers),
        "test_speaker": cfg.test_speaker,
        "gallery": int(len(g_idx)),
        "queries": int(len(q_idx)),
        "final_train_loss": float(result.history[-1]["loss"]) if result.history else float("nan"),
        "final_train_acc": float(result.history[-1].get("acc", float("nan"))) if result.history else float("nan"),
        "epochs": cfg.train.epochs,
    }
