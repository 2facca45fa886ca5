"""Progress bars for the loops a person waits for, off where nobody watches them.

`progress_bar(iterable, desc=...)` is `tqdm.auto.tqdm` (a widget in Jupyter, text in a
terminal) unless `WORKBENCH_PROGRESS=0`: `workbench run`, `make execute-notebooks`
and nbval set it for the notebook kernels they start, because a widget saved
into an executed notebook shows a bar frozen at "0/103" forever. The same
switch silences the model-loading bars of transformers / huggingface_hub.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
ENV = "WORKBENCH_PROGRESS"


def bars_enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def progress_bar(iterable: Iterable[T] | None = None, *, desc: str, enabled: bool = True,
             **kwargs: Any) -> tqdm:
    """A tqdm bar over `iterable` (or a manual one with `total=`), shown when `enabled` and allowed."""
    return tqdm(iterable, desc=desc, disable=not (enabled and bars_enabled()), **kwargs)


def quiet_environment() -> dict[str, str]:
    """Variables that turn every bar off in a child process (a notebook kernel)."""
    return {ENV: "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
