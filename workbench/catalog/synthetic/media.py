"""Image and audio rendering for the synthetic catalog (no polars: cheap to import in workers).

Each product's media depend only on its attributes and on a random generator
seeded from ``(seed, stream, item index)``, so the files are byte-identical
whatever the chunking or the number of worker processes.

* Image: a shape chosen by the leaf category (8 base outlines x 3 variants),
  filled with the product colour in one of four patterns, rotated, on a
  cluttered grey background, with pixel noise. Colour and pattern are visible
  only here (unless the text happens to mention them).
* Audio: a tap on the object, 1 s mono 16 kHz PCM_16 WAV; the partials, their
  inharmonicity and the decay depend on the material, with an impact click,
  an occasional bounce and background noise.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

from workbench.catalog.synthetic.attributes import COLOURS, MATERIALS

SAMPLE_RATE = 16_000
AUDIO_SECONDS = 1.0
PNG_COMPRESS_LEVEL = 1  # fixed so that files are byte-identical; 1 is fast and small enough

IMAGE_STREAM = 101
AUDIO_STREAM = 102

# In the order of attributes.COLOURS (index -> RGB).
COLOUR_RGB: tuple[tuple[int, int, int], ...] = (
    (200, 30, 35),  # red
    (235, 125, 20),  # orange
    (235, 205, 40),  # yellow
    (40, 150, 60),  # green
    (35, 80, 200),  # blue
    (120, 50, 160),  # purple
    (235, 120, 175),  # pink
    (120, 75, 35),  # brown
    (25, 25, 25),  # black
    (240, 240, 240),  # white
)
assert len(COLOUR_RGB) == len(COLOURS)

# Material -> (f0 range Hz, partial ratios, decay range s, impact-noise level).
# Ranges overlap on purpose (wood/plastic, glass/ceramic) so audio is informative, not trivial.
MATERIAL_SOUND: dict[str, tuple[tuple[float, float], tuple[float, ...], tuple[float, float], float]] = {
    "wood": ((230.0, 560.0), (1.0, 2.6, 4.1), (0.04, 0.11), 0.35),
    "metal": ((600.0, 1400.0), (1.0, 2.76, 5.40, 8.93), (0.40, 0.90), 0.05),
    "glass": ((1300.0, 2800.0), (1.0, 2.32, 4.25), (0.22, 0.50), 0.06),
    "plastic": ((330.0, 820.0), (1.0, 1.55, 2.4), (0.02, 0.06), 0.30),
    "fabric": ((70.0, 200.0), (1.0, 1.9), (0.01, 0.035), 0.90),
    "ceramic": ((850.0, 1900.0), (1.0, 2.05, 3.85, 6.2), (0.11, 0.28), 0.12),
}

N_BASE_SHAPES = 8
N_SHAPE_VARIANTS = 3


def item_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator of one item's media: depends only on (seed, stream, index)."""
    return np.random.default_rng([int(seed), int(stream), int(index)])


# ---------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------


def _regular(n: int, start: float, radius: float = 1.0) -> np.ndarray:
    a = start + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _base_outline(base: int) -> np.ndarray:
    """Unit outline (x right, y down) of one of the 8 base shapes."""
    if base == 0:  # circle
        return _regular(40, 0.0)
    if base == 1:  # axis-aligned square
        return _regular(4, np.pi / 4) * 1.15
    if base == 2:  # triangle, apex up
        return _regular(3, -np.pi / 2) * 1.1
    if base == 3:  # hexagon
        return _regular(6, 0.0)
    if base == 4:  # five-pointed star
        a = -np.pi / 2 + np.pi * np.arange(10) / 5
        r = np.where(np.arange(10) % 2 == 0, 1.05, 0.45)
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    if base == 5:  # plus-shaped cross
        w = 0.33
        return np.array(
            [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
             (-1, w), (-1, -w), (-w, -w)], dtype=float)
    if base == 6:  # wide ellipse
        return _regular(40, 0.0) * np.array([1.0, 0.55])
    # half disc, flat side down
    a = np.linspace(np.pi, 2 * np.pi, 24)
    return np.stack([np.cos(a), np.sin(a) + 0.4], axis=1)


def shape_polygons(leaf: int) -> list[tuple[np.ndarray, bool]]:
    """Polygons (unit coordinates, True = fill, False = cut out) drawing a leaf category's shape."""
    base, variant = leaf % N_BASE_SHAPES, (leaf // N_BASE_SHAPES) % N_SHAPE_VARIANTS
    outline = _base_outline(base)
    if variant == 0:
        return [(outline, True)]
    if variant == 1:  # with a round hole
        return [(outline, True), (_regular(24, 0.0, 0.34), False)]
    # on a stand: smaller shape raised, a stem and a foot
    top = outline * 0.68 + np.array([0.0, -0.3])
    stem = np.array([(-0.09, 0.25), (0.09, 0.25), (0.09, 0.85), (-0.09, 0.85)])
    foot = np.array([(-0.6, 0.8), (0.6, 0.8), (0.6, 1.0), (-0.6, 1.0)])
    return [(top, True), (stem, True), (foot, True)]


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_NOISE_BANK_SIZE = 1 << 20
_NOISE_BANK: dict[int, np.ndarray] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates relative to the image centre (cached per size)."""
    if size not in _GRIDS:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - np.float32(size / 2)
        _GRIDS[size] = (xx, yy)
    return _GRIDS[size]


def noise_bank(seed: int) -> np.ndarray:
    """2**20 standard normals (float32) from `seed`; items read slices at random offsets.

    Drawing fresh Gaussian noise for every pixel and sample dominated the
    rendering time; slices of one bank are as good for this purpose and cheap.
    """
    if seed not in _NOISE_BANK:
        rng = np.random.default_rng([int(seed), 7919])
        _NOISE_BANK[seed] = rng.standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)
    return _NOISE_BANK[seed]


def _noise(rng: np.random.Generator, bank: np.ndarray, n: int) -> np.ndarray:
    start = int(rng.integers(0, bank.size - n))
    return bank[start : start + n]


def render_image(rng: np.random.Generator, leaf: int, colour: int, pattern: int, size: int = 64,
                 bank: np.ndarray | None = None) -> np.ndarray:
    """One product image, (size, size, 3) uint8."""
    s = float(size)
    xx, yy = _grid(size)
    bank = noise_bank(0) if bank is None else bank
    # Background: a muted grey with a gradient, then clutter of random strokes and blobs
    # (some saturated, so colour is the shape's fill, not "any coloured pixel").
    grey = rng.uniform(70, 200)
    tint = (grey + rng.normal(0.0, 12.0, 3)).astype(np.float32)
    gdir = rng.uniform(0, 2 * np.pi)
    cg, sg = math.cos(gdir), math.sin(gdir)
    ramp = xx * np.float32(40.0 * cg / s) + yy * np.float32(40.0 * sg / s)
    bg = np.clip(ramp[..., None] + tint, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(canvas)
    n_clutter = int(rng.integers(3, 8))
    params = rng.random((n_clutter, 8))  # one call: per-call overhead dominated this loop
    for x0, y0, w, h, kind, r, g, b in params.tolist():
        x0, y0 = (x0 * 1.1 - 0.1) * s, (y0 * 1.1 - 0.1) * s
        w, h = (0.05 + 0.3 * w) * s, (0.05 + 0.3 * h) * s
        col = (int(r * 256), int(g * 256), int(b * 256))
        if kind < 1 / 3:
            draw.line([(x0, y0), (x0 + w, y0 + h)], fill=col, width=max(1, int(s / 40)))
        elif kind < 2 / 3:
            draw.rectangle([x0, y0, x0 + w * 0.5, y0 + h * 0.5], fill=col)
        else:
            draw.ellipse([x0, y0, x0 + w * 0.5, y0 + h * 0.5], fill=col)

    # Shape mask: rotated, scaled, jittered outline of the leaf category.
    theta = rng.uniform(-0.45, 0.45)  # about +-25 degrees
    radius = rng.uniform(0.28, 0.40) * s
    centre = s / 2 + rng.uniform(-0.08, 0.08, 2) * s
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    mask_img = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask_img)
    for poly, filled in shape_polygons(leaf):
        pts = poly @ rot.T * radius + centre
        mdraw.polygon([(float(x), float(y)) for x, y in pts], fill=255 if filled else 0)

    # Fill: jittered product colour, patterned with a lighter or darker version of itself.
    base_rgb = np.array(COLOUR_RGB[colour], dtype=np.float32)
    primary = np.clip(base_rgb * rng.uniform(0.85, 1.1) + rng.normal(0.0, 10.0, 3), 0, 255).astype(np.float32)
    secondary = primary * 0.45 if base_rgb.mean() > 150 else primary * 0.35 + 255.0 * 0.65
    phi = theta + rng.uniform(-0.2, 0.2)
    period = rng.uniform(0.11, 0.17) * s
    cp, sp = math.cos(phi) / period, math.sin(phi) / period
    dx, dy = xx - np.float32(centre[0] - s / 2), yy - np.float32(centre[1] - s / 2)
    sec: np.ndarray | None  # where the secondary colour shows; None: plain
    if pattern == 0:  # plain
        sec = None
    else:
        u = dx * cp + dy * sp
        fu = u - np.floor(u)
        if pattern == 1:  # stripes
            sec = fu < 0.5
        else:
            v = dy * cp - dx * sp
            if pattern == 2:  # dots
                fv = v - np.floor(v)
                sec = (fu - 0.5) ** 2 + (fv - 0.5) ** 2 < 0.09
            else:  # checks
                sec = (np.floor(u) + np.floor(v)) % 2 == 0
    shade = 1.0 + dx * np.float32(0.12 * cg / s) + dy * np.float32(0.12 * sg / s)
    if sec is None:
        fill = shade[..., None] * primary
    else:
        fill = shade[..., None] * np.where(sec[..., None], secondary, primary)
    fill_img = Image.fromarray(np.clip(fill, 0, 255).astype(np.uint8), "RGB")
    canvas.paste(fill_img, (0, 0), mask_img)
    img: np.ndarray = np.asarray(canvas, dtype=np.float32)
    img = img + _noise(rng, bank, img.size).reshape(img.shape) * np.float32(rng.uniform(3.0, 11.0))
    return np.clip(img, 0, 255).astype(np.uint8)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(img: np.ndarray) -> bytes:
    """A minimal 8-bit RGB PNG (no filter, fixed zlib level, no timestamps): byte-identical
    for identical pixels and about twice as fast as PIL's encoder on these small images."""
    h, w, _ = img.shape
    raw = np.zeros((h, w * 3 + 1), dtype=np.uint8)  # each row: filter byte 0, then RGB
    raw[:, 1:] = img.reshape(h, w * 3)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_COMPRESS_LEVEL))
        + _png_chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------

_T = np.arange(int(SAMPLE_RATE * AUDIO_SECONDS), dtype=np.float32) / np.float32(SAMPLE_RATE)
_FABRIC = MATERIALS.index("fabric")


def render_audio(rng: np.random.Generator, material: int, bank: np.ndarray | None = None) -> np.ndarray:
    """One tap sound, float32 mono in [-1, 1], SAMPLE_RATE * AUDIO_SECONDS samples."""
    (f_lo, f_hi), ratios, (d_lo, d_hi), impact = MATERIAL_SOUND[MATERIALS[material]]
    bank = noise_bank(0) if bank is None else bank
    n = _T.size
    f0 = math.exp(rng.uniform(math.log(f_lo), math.log(f_hi)))
    decay = rng.uniform(d_lo, d_hi)
    onset = rng.uniform(0.02, 0.25)
    out = np.zeros(n, dtype=np.float32)

    def tap(t0: float, amp: float) -> None:
        i0 = int(t0 * SAMPLE_RATE)
        if i0 >= n:
            return
        # beyond 7 time constants the ring is below the noise floor: stop computing there
        env_len = min(n - i0, int(SAMPLE_RATE * decay * 7) + 1)
        t = _T[:env_len]
        sig = np.zeros(env_len, dtype=np.float32)
        for k, ratio in enumerate(ratios):
            f = f0 * ratio * (1.0 + rng.normal(0.0, 0.015))
            if f >= SAMPLE_RATE / 2 - 200:
                continue
            a = np.float32(amp * rng.uniform(0.5, 1.0) / (1.0 + k) ** 1.2)
            rate = np.float32((1.0 + 0.6 * k) / decay)
            sig += a * np.exp(-rate * t) * np.sin(np.float32(2 * np.pi * f) * t + np.float32(rng.uniform(0, 2 * np.pi)))
        # impact click: a short burst of (for fabric, smoothed) noise
        m = min(env_len, int(SAMPLE_RATE * 0.03))
        burst = _noise(rng, bank, m) * np.exp(-t[:m] / np.float32(0.004))
        if material == _FABRIC:
            burst = np.convolve(burst, np.full(12, 1 / 12.0, dtype=np.float32), mode="same") * np.float32(3.0)
        sig[:m] += np.float32(amp * impact) * burst
        out[i0 : i0 + env_len] += sig

    tap(onset, 1.0)
    if rng.random() < 0.3:  # a bounce
        tap(onset + rng.uniform(0.12, 0.4), rng.uniform(0.25, 0.6))
    peak = float(np.abs(out).max()) or 1.0
    out *= np.float32(rng.uniform(0.3, 0.85) / peak)
    snr_db = rng.uniform(12.0, 35.0)
    rms = float(np.sqrt(np.mean(out * out))) or 1e-3
    out += _noise(rng, bank, n) * np.float32(rms / (10 ** (snr_db / 20)))
    return np.clip(out, -1.0, 1.0)


def wav_bytes(x: np.ndarray) -> bytes:
    """16-bit PCM WAV via soundfile; we quantise to int16 ourselves (round to nearest),
    which is fixed across libsndfile versions and about 3x faster than its float path."""
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Worker entry point
# ---------------------------------------------------------------------------


def _ensure_parent(path: Path, made: set[Path]) -> None:
    if path.parent not in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        made.add(path.parent)


def render_block(
    root: str,
    seed: int,
    image_size: int,
    indices: Sequence[int],
    leaves: Sequence[int],
    colours: Sequence[int],
    patterns: Sequence[int],
    materials: Sequence[int],
    image_paths: Sequence[str | None],
    audio_paths: Sequence[str | None],
) -> int:
    """Render and write the media of a block of items under the catalog folder ``root``.

    Paths are relative to ``root`` (e.g. ``media/images/p0000123.png``); None skips
    that file (the product lacks the modality). Returns the number of files written.
    """
    base = Path(root)
    bank = noise_bank(seed)
    made: set[Path] = set()
    written = 0
    for i, idx in enumerate(indices):
        if (image_path := image_paths[i]) is not None:
            img = render_image(item_rng(seed, IMAGE_STREAM, idx), int(leaves[i]), int(colours[i]),
                               int(patterns[i]), image_size, bank)
            path = base / image_path
            _ensure_parent(path, made)
            path.write_bytes(png_bytes(img))
            written += 1
        if (audio_path := audio_paths[i]) is not None:
            wav = render_audio(item_rng(seed, AUDIO_STREAM, idx), int(materials[i]), bank)
            path = base / audio_path
            _ensure_parent(path, made)
            path.write_bytes(wav_bytes(wav))  # via memory: faster than soundfile opening the path
            written += 1
    return written

