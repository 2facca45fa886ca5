"""Decoding product media: images with PIL, audio with soundfile.

Every failure raises `MediaError` naming the file and what was expected. Media
files come from outside (catalog imports), so sizes are checked from headers
before anything is decoded: a 20000x20000 PNG of a few hundred bytes, or a WAV
header claiming two billion frames, must fail fast instead of eating memory.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError

from workbench.errors import MediaError

AUDIO_SAMPLE_RATE = 16_000
# Defaults of `workbench.catalog.ValidationLimits` (kept equal; see its docstring).
MAX_IMAGE_PIXELS = 50_000_000
MAX_AUDIO_SECONDS = 600.0


def _show(path: str | Path) -> str:
    """The path as text for a message; repr when it holds control characters (a NUL would end the line)."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _require_regular_file(path: str | Path, what: str) -> None:
    """Refuse folders, devices and pipes before opening: a pipe blocks on open and a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as e:
        raise MediaError(f"{what} {_show(path)}: file not found") from e
    except ValueError as e:  # an embedded NUL byte
        raise MediaError(f"{what} {_show(path)}: {e}; expected a path without NUL bytes") from e
    except OSError as e:  # ELOOP for a symbolic-link loop, EACCES, ...
        raise MediaError(f"{what} {_show(path)}: cannot be opened ({e.strerror or e}); expected a readable file") from e
    if stat.S_ISDIR(mode):
        raise MediaError(f"{what} {_show(path)}: is a folder, expected a file")
    if not stat.S_ISREG(mode):
        raise MediaError(f"{what} {_show(path)}: is not a regular file (a device, pipe or socket), expected a file")


def load_image(
    path: str | Path, size: int | tuple[int, int] | None = None, *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB; greyscale, CMYK, palette and alpha are converted.

    `max_pixels` is checked on the header's declared size before any pixel is decoded.
    """
    _require_regular_file(path, "image")
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # our own, stricter limit replaces PIL's warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # lazy: reads the header only
                _check_pixels(path, img.size, max_pixels)
                img.load()
                rgb = img.convert("RGB")
    except MediaError:
        raise
    except FileNotFoundError as e:
        raise MediaError(f"image {_show(path)}: file not found") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        limit = max_pixels or Image.MAX_IMAGE_PIXELS
        raise MediaError(f"image {_show(path)}: refused as a decompression bomb ({e}); expected at most "
                         f"{limit:,} pixels") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"image {_show(path)}: not a decodable image (expected PNG/JPEG/WebP…): {e}") from e
    except Exception as e:  # PIL's decoders raise assorted types on hostile files
        raise MediaError(f"image {_show(path)}: not a decodable image ({type(e).__name__}: {e})") from e
    if size is not None:
        wh = (size, size) if isinstance(size, int) else (size[1], size[0])
        if rgb.size != wh:
            rgb = rgb.resize(wh, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _check_pixels(path: str | Path, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise MediaError(f"image {_show(path)}: header declares {width}x{height} pixels, expected a non-empty image")
    if max_pixels is not None and width * height > max_pixels:
        raise MediaError(
            f"image {_show(path)}: header declares {width}x{height} = {width * height:,} pixels, "
            f"expected at most {max_pixels:,}"
        )


def load_audio(
    path: str | Path,
    sample_rate: int = AUDIO_SAMPLE_RATE,
    seconds: float | None = None,
    *,
    max_seconds: float | None = MAX_AUDIO_SECONDS,
) -> np.ndarray:
    """Mono float32 audio at `sample_rate`, padded with zeros or cropped to `seconds` if given.

    The header is checked first: a WAV whose `data` chunk claims more bytes than
    the file holds is refused (libsndfile would silently return fewer samples),
    and so is audio longer than `max_seconds`.
    """
    _require_regular_file(path, "audio")
    duration = audio_duration(path)
    if max_seconds is not None and duration > max_seconds:
        raise MediaError(f"audio {_show(path)}: lasts {duration:,.1f} s by its header, expected at most "
                         f"{max_seconds:,.0f} s")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError as e:
        raise MediaError(f"audio {_show(path)}: file not found") from e
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as e:
        raise MediaError(f"audio {_show(path)}: not decodable audio (expected a WAV/FLAC/OGG file): {e}") from e
    if data.shape[0] == 0:
        raise MediaError(f"audio {_show(path)}: no samples (empty or truncated file)")
    wave = data.mean(axis=1)
    if rate != sample_rate:
        wave = resample(wave, rate, sample_rate)
    if seconds is not None:
        n = int(round(seconds * sample_rate))
        wave = wave[:n] if wave.shape[0] >= n else np.pad(wave, (0, n - wave.shape[0]))
    return np.ascontiguousarray(wave, dtype=np.float32)


def audio_duration(path: str | Path) -> float:
    """Seconds of audio the file's header declares, without decoding; MediaError if it cannot be read.

    WAV headers are parsed here (see `_wav_header`); other formats ask libsndfile.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
                seconds = _wav_header(fh, os.fstat(fh.fileno()).st_size, path)
                if seconds is not None:
                    return seconds
    except (OSError, ValueError) as e:
        raise MediaError(f"audio {_show(path)}: cannot be read ({e}); expected a readable audio file") from e
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as e:
        raise MediaError(f"audio {_show(path)}: not decodable audio (expected a WAV/FLAC/OGG file): {e}") from e
    return info.frames / info.samplerate if info.samplerate > 0 else 0.0


def _wav_header(fh: io.BufferedReader, file_size: int, path: str | Path) -> float | None:
    """Duration of a RIFF/WAVE file from its `fmt ` and `data` chunks; None when they cannot be found.

    Raises MediaError when the `data` chunk declares more bytes than the file
    holds: a truncated download, or a header claiming 2**31 frames.
    """
    rate = block_align = None
    pos = 12
    while pos + 8 <= file_size:
        fh.seek(pos)
        chunk_id, size = struct.unpack("<4sI", fh.read(8))
        body = pos + 8
        if chunk_id == b"fmt " and size >= 16 and body + 16 <= file_size:
            _fmt, _channels, rate, _byte_rate, block_align = struct.unpack("<HHIIH", fh.read(14))
        elif chunk_id == b"data":
            available = file_size - body
            if rate is None or not block_align or not rate:
                return None  # libsndfile reports the broken format
            if size > available:
                raise MediaError(
                    f"audio {_show(path)}: truncated: the WAV header declares {size:,} bytes of samples "
                    f"({size // block_align:,} frames, {size / block_align / rate:,.1f} s) but the file holds "
                    f"{max(available, 0):,}; expected a complete file"
                )
            return size // block_align / rate
        pos = body + size + (size & 1)  # chunks are padded to an even size
    return None


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy), exact for integer-ratio rates such as 8 kHz -> 16 kHz."""
    from scipy.signal import resample_poly

    g = gcd(rate_in, rate_out)
    return resample_poly(wave, rate_out // g, rate_in // g).astype(np.float32)


def check_media_file(
    path: Path,
    kind: str,
    *,
    max_image_pixels: int | None = MAX_IMAGE_PIXELS,
    max_audio_seconds: float | None = MAX_AUDIO_SECONDS,
) -> None:
    """Fully decode one media file of `kind` ('image' or 'audio'); raise MediaError if it fails."""
    if kind == "image":
        load_image(path, max_pixels=max_image_pixels)
    elif kind == "audio":
        _require_regular_file(path, "audio")
        try:  # decode at the native rate: resampling proves nothing about the file
            rate = sf.info(str(path)).samplerate
        except Exception:
            rate = AUDIO_SAMPLE_RATE  # load_audio says why the file cannot be decoded
        load_audio(path, sample_rate=rate, max_seconds=max_audio_seconds)
    else:
        raise MediaError(f"{_show(path)}: unknown media kind {kind!r}, expected 'image' or 'audio'")


def image_to_png_bytes(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 array (thumbnails for galleries and hovers)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
