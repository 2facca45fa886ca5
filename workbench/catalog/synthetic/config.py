"""The size and randomness of a synthetic catalog."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import ConfigError

__all__ = ["SyntheticConfig"]


@dataclass
class SyntheticConfig:
    """Size and randomness of a synthetic catalog (see :mod:`workbench.catalog.synthetic`)."""

    n_items: int = 1000
    n_users: int = 300
    seed: int = 0
    n_queries: int = 300
    image_size: int = 64
    with_media: bool = True
    missing_image_rate: float = 0.10
    missing_audio_rate: float = 0.10
    events_per_user: float = 30.0  # mean number of events (one per visit) per user
    chunk_size: int = 20_000  # items per streamed chunk
    workers: int | None = None  # processes for media; None = os.cpu_count()

    def __post_init__(self) -> None:
        if not 1 <= self.n_items <= 99_999_999:
            raise ConfigError(f"SyntheticConfig.n_items={self.n_items}: expected 1..99,999,999")
        if self.n_users < 0 or self.n_queries < 0:
            raise ConfigError("SyntheticConfig.n_users and n_queries must be >= 0")
        if self.image_size < 16:
            raise ConfigError(f"SyntheticConfig.image_size={self.image_size}: expected >= 16 pixels")
        for name in ("missing_image_rate", "missing_audio_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"SyntheticConfig.{name}={rate}: expected a rate in [0, 1]")
        if self.events_per_user < 2:
            raise ConfigError(f"SyntheticConfig.events_per_user={self.events_per_user}: expected >= 2")
        if self.chunk_size < 1:
            raise ConfigError(f"SyntheticConfig.chunk_size={self.chunk_size}: expected >= 1")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"SyntheticConfig.workers={self.workers}: expected >= 0 or None")
