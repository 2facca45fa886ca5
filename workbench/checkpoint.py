"""The one checkpoint format of the workbench: training epochs, encoders, fusion, rankers.

A checkpoint is a folder holding

* ``model.safetensors``: the tensors (no pickle, ever);
* ``model.json``: ``{"format": "workbench.checkpoint/1", "kind", "model_config",
  "extra", "aliases"}``. ``kind`` says what wrote it (``train_epoch``,
  ``multimodal_encoder``, ``fusion``, ``ranker.bpr``, …) so a loader refuses a
  folder of another kind; ``model_config`` is everything needed to rebuild the
  model, so loading needs nothing but the folder; ``extra`` holds what the writer
  wants to remember (epoch, metrics, digests, fingerprints); ``aliases`` maps the
  names of tied tensors, which safetensors cannot store twice, to the saved name.

``save_checkpoint`` writes the weights first and the JSON last, each atomically
(``workbench.files``), so a reader never finds a ``model.json`` describing
weights that are not there yet. Writers of whole folders (rankers, training
epochs) build them in a staging folder and publish it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from workbench.errors import CheckpointError, ConfigError
from workbench.files import read_json_object, save_tensors_atomic, write_json_atomic

__all__ = [
    "DOC_FILE",
    "FORMAT",
    "WEIGHTS_FILE",
    "json_safe",
    "load_into",
    "read_checkpoint",
    "read_checkpoint_doc",
    "read_json",
    "read_tensors",
    "save_checkpoint",
]

FORMAT = "workbench.checkpoint/1"
WEIGHTS_FILE = "model.safetensors"
DOC_FILE = "model.json"
LEGACY_CONFIG_FILE = "config.json"  # encoders and fusion before the one format


def _dedup(tensors: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """CPU copies without aliases (tied weights): safetensors refuses shared storage.

    Returns the tensors to save and ``alias -> saved name`` for the dropped ones.
    """
    out: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in tensors.items():
        t = t.detach()
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
               tuple(t.stride()), t.dtype) if t.numel() else None
        if key is not None and key in seen:
            aliases[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        # A copy: the file must not alias live parameters.
        out[name] = t.to("cpu", copy=True).contiguous()
    return out, aliases


def json_safe(obj: Any) -> Any:
    """`obj` with non-finite floats replaced by None (JSON has no NaN; a diverged loss must
    not stop a checkpoint from being written)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def save_checkpoint(
    folder: str | os.PathLike,
    tensors_or_module: Mapping[str, Tensor] | nn.Module,
    *,
    kind: str,
    model_config: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` then ``model.json`` into ``folder``; returns ``folder``.

    ``tensors_or_module`` is a state dict or a module (its ``state_dict()``).
    ``model_config`` and ``extra`` must be JSON-serialisable (ConfigError otherwise).
    """
    folder = Path(folder)
    state = tensors_or_module.state_dict() if isinstance(tensors_or_module, nn.Module) else tensors_or_module
    tensors, aliases = _dedup(state)
    doc = {
        "format": FORMAT,
        "kind": kind,
        "model_config": dict(model_config) if model_config is not None else {},
        "extra": dict(extra) if extra is not None else {},
        "aliases": aliases,
    }
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model_config/extra for {folder} must be JSON-serialisable (no NaN): {exc}") from exc
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(folder / WEIGHTS_FILE, tensors, {"format": "pt"})
    write_json_atomic(folder / DOC_FILE, doc)
    return folder


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`; CheckpointError naming `what` and the file otherwise."""
    return read_json_object(path, what, CheckpointError)


def read_tensors(path: Path, what: str = "checkpoint weights") -> dict[str, Tensor]:
    """Every tensor of a safetensors file, on the CPU; CheckpointError naming the file otherwise."""
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{what} {path} ({path.stat().st_size} bytes) is not a valid safetensors file "
            f"(truncated, or another format such as a pickled torch file?): {exc}") from exc


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    if (folder / LEGACY_CONFIG_FILE).is_file() and not (folder / DOC_FILE).is_file():
        raise CheckpointError(
            f"{folder / LEGACY_CONFIG_FILE}: written by an older workbench ({LEGACY_CONFIG_FILE} "
            f"instead of {DOC_FILE}); re-run notebook 02 (encoders) or 03 (fusion) to save it again")
    if not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(
            f"{folder}: no weights ({WEIGHTS_FILE} missing; expected a checkpoint folder saved by "
            "the workbench)")


def read_checkpoint_doc(folder: str | os.PathLike, kind: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """The ``model.json`` of a checkpoint folder, checked for format and (when given) kind."""
    folder = Path(folder)
    _check_folder(folder)
    path = folder / DOC_FILE
    doc = read_json(path, "the checkpoint document")
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {doc.get('format')!r}, expected {FORMAT!r}")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and doc.get("kind") not in kinds:
        raise CheckpointError(
            f"{path}: a {doc.get('kind')!r} checkpoint, expected {' or '.join(map(repr, kinds))}")
    for key in ("model_config", "extra", "aliases"):
        if not isinstance(doc.get(key), dict):
            raise CheckpointError(f"{path}: {key!r} missing or not a JSON object")
    return doc


def read_checkpoint(
    folder: str | os.PathLike, kind: str | tuple[str, ...] | None = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, doc)`` of a checkpoint folder; CheckpointError naming the file at fault."""
    doc = read_checkpoint_doc(folder, kind)
    return read_tensors(Path(folder) / WEIGHTS_FILE), doc


def load_into(
    module: nn.Module,
    tensors: Mapping[str, Tensor],
    source: str | os.PathLike,
    *,
    aliases: Mapping[str, str] | None = None,
    allow_missing: tuple[str, ...] = (),
    strict: bool = True,
) -> None:
    """Copy `tensors` into `module`'s parameters and buffers, checking names and shapes.

    `source` (the weights file) is named in every error. A shape mismatch is always
    an error; with `strict`, so are tensors the module lacks and module tensors the
    checkpoint lacks, except those under an `allow_missing` prefix (frozen backbones
    reloaded from elsewhere) or stored under another name (`aliases`, tied weights).
    """
    expected = module.state_dict()
    aliases = dict(aliases or {})
    for name, target in expected.items():  # module order: the first mismatch a reader expects
        t = tensors.get(name)
        if t is not None and tuple(target.shape) != tuple(t.shape):
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(t.shape)} in the checkpoint but "
                f"{tuple(target.shape)} in the model ({type(module).__name__}); was the "
                "model built with the same config?")
    unexpected = sorted(set(tensors) - set(expected))
    missing = sorted(k for k in set(expected) - set(tensors) - set(aliases)
                     if not (allow_missing and k.startswith(allow_missing)))
    if strict and (unexpected or missing):
        raise CheckpointError(
            f"{source} does not match {type(module).__name__}: missing from the checkpoint "
            f"{missing[:10]}{' …' if len(missing) > 10 else ''}, not in the model "
            f"{unexpected[:10]}{' …' if len(unexpected) > 10 else ''}")
    with torch.no_grad():
        for name, target in expected.items():
            src = name if name in tensors else aliases.get(name)
            if src is not None and src in tensors:
                target.copy_(tensors[src])
