"""Decoding product media: images with PIL, audio with soundfile.

Every failure raises `MediaError` naming the file and what was expected.
"""

from __future__ import annotations

import io
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError

from workbench.errors import MediaError

AUDIO_SAMPLE_RATE = 16_000


def load_image(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB; greyscale, CMYK, palette and alpha are converted."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except FileNotFoundError as e:
        raise MediaError(f"image {path}: file not found") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"image {path}: not a decodable image (expected PNG/JPEG/WebP…): {e}") from e
    if size is not None:
        wh = (size, size) if isinstance(size, int) else (size[1], size[0])
        if rgb.size != wh:
            rgb = rgb.resize(wh, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_audio(
    path: str | Path, sample_rate: int = AUDIO_SAMPLE_RATE, seconds: float | None = None
) -> np.ndarray:
    """Mono float32 audio at `sample_rate`, padded with zeros or cropped to `seconds` if given."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError as e:
        raise MediaError(f"audio {path}: file not found") from e
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
        raise MediaError(f"audio {path}: not decodable audio (expected a WAV/FLAC/OGG file): {e}") from e
    if data.shape[0] == 0:
        raise MediaError(f"audio {path}: no samples (empty or truncated file)")
    wave = data.mean(axis=1)
    if rate != sample_rate:
        wave = resample(wave, rate, sample_rate)
    if seconds is not None:
        n = int(round(seconds * sample_rate))
        wave = wave[:n] if wave.shape[0] >= n else np.pad(wave, (0, n - wave.shape[0]))
    return np.ascontiguousarray(wave, dtype=np.float32)


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy), exact for integer-ratio rates such as 8 kHz -> 16 kHz."""
    from scipy.signal import resample_poly

    g = gcd(rate_in, rate_out)
    return resample_poly(wave, rate_out // g, rate_in // g).astype(np.float32)


def check_media_file(path: Path, kind: str) -> None:
    """Fully decode one media file of `kind` ('image' or 'audio'); raise MediaError if it fails."""
    if kind == "image":
        load_image(path)
    elif kind == "audio":
        load_audio(path, sample_rate=sf.info(str(path)).samplerate if _is_sound(path) else AUDIO_SAMPLE_RATE)
    else:
        raise MediaError(f"{path}: unknown media kind {kind!r}, expected 'image' or 'audio'")


def _is_sound(path: Path) -> bool:
    try:
        sf.info(str(path))
        return True
    except Exception:
        return False


def image_to_png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 array (thumbnails for galleries and hovers)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
