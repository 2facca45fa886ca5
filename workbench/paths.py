"""Where things live: the project root, profiles and default artefact folders.

One layout for every entry point (see `home`): `<home>/data/catalogs/<catalog>`,
`<home>/data/work/<catalog>` and `<home>/reports/<run>/<notebook>/`.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import ConfigError

PROFILES = ("ci", "full")
# The notebook series `workbench run` executes, in order (02b and 08 are extras outside it): the
# stems of notebooks/<stem>.ipynb and of each stage's report folder.
SERIES = (
    "01_catalog",
    "02_encoders",
    "03_fusion",
    "04_embedding_space",
    "05_rankers",
    "06_scann_index",
    "07_evaluation_report",
)


def project_root() -> Path:
    """The folder holding `pyproject.toml` (the checkout), or the working directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def current_profile() -> str:
    """`WORKBENCH_PROFILE`: `ci` (small, CPU, minutes; the default) or `full`."""
    profile = os.environ.get("WORKBENCH_PROFILE", "ci")
    if profile not in PROFILES:
        raise ConfigError(f"WORKBENCH_PROFILE={profile!r}: expected one of {', '.join(PROFILES)}")
    return profile


HOME_VARIABLE = "WORKBENCH_HOME"


def home() -> Path:
    """Where `data/` and `reports/` live: `$WORKBENCH_HOME` when set, else the project root.

    The command line, `workbench run`, the notebooks (in JupyterLab or under nbval) and the
    tests all resolve their default folders through here, so they share one layout whatever
    the working directory.
    """
    value = os.environ.get(HOME_VARIABLE, "").strip()
    if not value:
        return project_root()
    path = Path(value).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{HOME_VARIABLE}={value!r}: is not a folder; expected the folder for data/ and reports/")
    return path.resolve()


def data_dir() -> Path:
    """`<home>/data`: catalogs (`data/catalogs/<name>`) and each catalog's artefacts (`data/work/<name>`)."""
    return home() / "data"


def reports_dir() -> Path:
    """`<home>/reports`: one folder per run, `reports/<run>/<notebook>/metrics.json`."""
    return home() / "reports"


def default_catalog_dir(profile: str | None = None) -> Path:
    """The synthetic catalog of a profile: `<home>/data/catalogs/synthetic-<profile>`."""
    return data_dir() / "catalogs" / f"synthetic-{profile or current_profile()}"


def default_work_dir(catalog_dir: str | Path) -> Path:
    """A catalog's encoders, embeddings, index and rankers: `<home>/data/work/<catalog folder name>`."""
    return data_dir() / "work" / Path(catalog_dir).resolve().name


def default_run_name(catalog_dir: str | Path) -> str:
    """A run is named after its catalog's folder unless the user names it (`workbench run --run`)."""
    return Path(catalog_dir).resolve().name


def default_report_dir(catalog_dir: str | Path) -> Path:
    """`<home>/reports/<run>` for a catalog: where `workbench run` writes, and a notebook opened by hand."""
    return reports_dir() / default_run_name(catalog_dir)


def cache_dir() -> Path:
    """Ignored cache inside the project (numba JIT cache, decoded media)."""
    path = project_root() / ".cache"
    path.mkdir(exist_ok=True)
    return path
