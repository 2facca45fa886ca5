"""Where things live: the project root, profiles and default artefact folders."""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import ConfigError

PROFILES = ("ci", "full")


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


def default_catalog_dir(profile: str | None = None) -> Path:
    return project_root() / "data" / "catalogs" / f"synthetic-{profile or current_profile()}"


def default_work_dir(catalog_dir: str | Path) -> Path:
    return project_root() / "data" / "work" / Path(catalog_dir).resolve().name


def cache_dir() -> Path:
    """Ignored cache inside the project (numba JIT cache, decoded media)."""
    path = project_root() / ".cache"
    path.mkdir(exist_ok=True)
    return path
