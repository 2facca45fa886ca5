"""Bringing source product photos into a catalog's media folder, counting what was odd.

Plain RGB JPEGs of a reasonable size are copied byte for byte. Anything else
(CMYK or greyscale JPEGs, palette/alpha PNGs, 16-bit images, photos larger than
`max_side`) is decoded with `workbench.media.load_image`, which converts to RGB,
and re-encoded as an RGB JPEG so every tower reads the same kind of file.
Undecodable or tiny files are left out and the product keeps its text.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from workbench.catalog.loaders import ImportReport
from workbench.errors import MediaError
from workbench.files import atomic_path
from workbench.media import load_image
from workbench.progress import progress_bar

JPEG_QUALITY = 95


@dataclass(frozen=True)
class ImagePolicy:
    max_side: int | None = None  # longer side above this is downscaled (None: keep the size)
    min_side: int = 16  # a shorter side below this is not a product photo: left out


def _save_jpeg_atomic(img: Image.Image, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        img.save(tmp, format="JPEG", quality=JPEG_QUALITY)


def import_image(
    src: Path, dest: Path, report: ImportReport, policy: ImagePolicy = ImagePolicy()
) -> bool:
    """Copy or re-encode `src` to `dest` (a .jpg path); False (and counted) when it is unusable."""
    try:
        pixels = load_image(src)  # full decode: truncated and corrupt files fail here
        with Image.open(src) as probe:
            mode, fmt = probe.mode, probe.format
    except MediaError:
        report.repair("image file not decodable: image set to null (text kept)")
        return False
    h, w = pixels.shape[:2]
    if min(h, w) < policy.min_side:
        report.repair(f"image smaller than {policy.min_side} px: image set to null (text kept)")
        return False
    too_big = policy.max_side is not None and max(h, w) > policy.max_side
    if mode == "RGB" and fmt == "JPEG" and not too_big:
        shutil.copyfile(src, dest)
        return True
    img = Image.fromarray(pixels)
    if mode != "RGB":
        report.repair(f"image mode {mode} re-encoded as RGB JPEG")
    elif fmt != "JPEG":
        report.repair(f"image format {fmt} re-encoded as RGB JPEG")
    if too_big:
        scale = policy.max_side / max(h, w)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        report.repair(f"image larger than {policy.max_side} px downscaled")
    _save_jpeg_atomic(img, dest)
    return True


def import_images(
    item_ids: Sequence[str],
    find: Callable[[str], Path | None],
    media_dir: Path,
    report: ImportReport,
    policy: ImagePolicy = ImagePolicy(),
    *,
    missing_reason: str,
    on_found: Callable[[Path], None] | None = None,
    desc: str = "images",
    progress: bool = True,
) -> list[str | None]:
    """The `image` column: each item's photo (found by `find`) imported as `media/images/<id>.jpg`.

    Items without a usable photo get null and keep their text; those without any
    file are counted under `missing_reason`. `on_found` sees every photo found
    (e.g. to tally layouts or sizes) before it is imported.
    """
    folder = media_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    column: list[str | None] = []
    missing = 0
    for item in progress_bar(item_ids, desc=desc, enabled=progress):
        photo = find(item)
        if photo is None:
            missing += 1
            column.append(None)
            continue
        if on_found is not None:
            on_found(photo)
        ok = import_image(photo, folder / f"{item}.jpg", report, policy)
        column.append(f"media/images/{item}.jpg" if ok else None)
    report.repair(missing_reason, missing)  # unusable files are counted by import_image
    return column


def size_note(sizes: dict[tuple[int, int], int]) -> str:
    """One line summarising the image sizes seen (W×H), for the report's notes."""
    if not sizes:
        return "no images"
    common = max(sizes.items(), key=lambda kv: kv[1])
    areas = sorted(sizes, key=lambda wh: wh[0] * wh[1])
    return (
        f"{sum(sizes.values())} images in {len(sizes)} distinct sizes; most common "
        f"{common[0][0]}x{common[0][1]} ({common[1]}), smallest {areas[0][0]}x{areas[0][1]}, "
        f"largest {areas[-1][0]}x{areas[-1][1]}"
    )


def probe_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:
            return img.size
    except OSError:
        return None
