"""The settings of one ``fit`` call, checked when they are made."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import ConfigError

# Fields that shape the optimisation trajectory: a resume that changes one of them
# cannot reproduce the uninterrupted run, so it is warned about.
TRAJECTORY_FIELDS = (
    "epochs", "batch_size", "lr", "weight_decay", "warmup", "grad_clip", "seed", "shuffle",
    "drop_last", "betas", "eps", "precision",
)


@dataclass
class TrainConfig:
    """Settings of one ``fit`` call (see ``workbench.train`` for the behaviour).

    Validated on construction; ``fit`` validates again, since fields may be
    assigned afterwards.
    """

    epochs: int = 10
    batch_size: int = 256  # per process under DDP
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.05  # fraction of total steps with a linear warm-up
    grad_clip: float | None = 1.0  # max gradient norm; None disables clipping
    device: str = "auto"  # cuda, then mps, then cpu
    precision: str = "auto"  # bf16 autocast on cuda only; "fp32" disables it
    seed: int = 0
    out_dir: str | None = None  # checkpoints each epoch, atomically
    resume: bool = False
    num_workers: int | None = None  # None: chosen for the device
    progress: bool = True
    shuffle: bool = True
    drop_last: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    log_every: int = 20  # steps between progress-bar loss updates (one host sync each)
    keep_checkpoints: int = 1  # newest epoch folders kept in out_dir
    stop_after: int | None = None  # stop this call after this epoch (schedule still spans `epochs`)
    ddp_find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError on values that cannot work, naming the field."""
        if self.epochs < 0:
            raise ConfigError(f"TrainConfig.epochs={self.epochs}: expected >= 0")
        if self.batch_size < 1:
            raise ConfigError(f"TrainConfig.batch_size={self.batch_size}: expected >= 1")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr={self.lr}: expected > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"TrainConfig.weight_decay={self.weight_decay}: expected >= 0")
        if not 0.0 <= self.warmup < 1.0:
            raise ConfigError(f"TrainConfig.warmup={self.warmup}: expected a fraction in [0, 1)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"TrainConfig.grad_clip={self.grad_clip}: expected > 0 or None")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"TrainConfig.num_workers={self.num_workers}: expected >= 0 or None")
        if self.log_every < 1:
            raise ConfigError(f"TrainConfig.log_every={self.log_every}: expected >= 1")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"TrainConfig.keep_checkpoints={self.keep_checkpoints}: expected >= 1")
        if self.stop_after is not None and self.stop_after < 1:
            raise ConfigError(f"TrainConfig.stop_after={self.stop_after}: expected >= 1 or None")
        if self.resume and self.out_dir is None:
            raise ConfigError("TrainConfig.resume=True needs out_dir (where the checkpoints are)")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"TrainConfig.precision={self.precision!r}: expected auto, bf16 or fp32")

    @property
    def last_epoch(self) -> int:
        """The epoch this call stops after: ``epochs``, or ``stop_after`` when sooner."""
        return self.epochs if self.stop_after is None else min(self.epochs, self.stop_after)
