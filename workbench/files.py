"""Atomic files, atomic folders and checksums: the one place artefacts are written.

Every file the workbench writes goes through a temporary sibling that is
flushed, fsynced and then renamed over the target (`os.replace`, atomic on
POSIX), and the parent folder is fsynced so the rename survives a power cut.
Readers therefore see the old file or the new one, never half of either.

Folders (catalogs, indexes) are built in a *staging* sibling
(`.<name>.staging-<id>`) and published with `publish_dir`, which swaps the
staging folder and the old target in one `renameat2(RENAME_EXCHANGE)` call
where the kernel and file system support it, so the target path always holds
a complete folder. Each staging folder holds a lock for as long as its writer
lives; `remove_stale_staging` (called by `staging_dir` before it creates a new
one) deletes the staging folders whose writer died (kill -9, power cut) and
restores a previous folder that an interrupted fallback publish left aside.

This module imports nothing from the rest of the workbench.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from workbench.errors import WorkbenchError

try:  # POSIX advisory locks: released by the kernel when the holder dies
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "atomic_path",
    "fsync_dir",
    "fsync_tree",
    "interrupted_publish",
    "publish_dir",
    "remove_stale_staging",
    "save_tensors_atomic",
    "sha256_file",
    "staging_dir",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
    "write_text_atomic",
]

HASH_CHUNK = 1 << 20
STAGING_MARK = ".staging-"
BACKUP_MARK = ".old-"
_LOCK_NAME = ".writer.lock"


# --------------------------------------------------------------------------- checksums


def sha256_file(path: str | os.PathLike, chunk: int = HASH_CHUNK) -> str:
    """Hex sha256 of a regular file's bytes.

    A device, fifo or folder is refused (`OSError`) before anything is read: hashing
    /dev/zero would never end, and opening a fifo would block until a writer came.
    """
    path = Path(path)
    # O_NONBLOCK: opening a fifo must not wait for a writer; fstat then refuses it.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a folder, device or pipe)", str(path))
        digest = hashlib.sha256()
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- atomic files


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so that renames inside it are durable (a no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """Make everything under `folder` durable before it is published by a rename.

    One `syncfs` of the file system that holds it (Linux) rather than an fsync per
    file: a catalog can hold a hundred thousand media files. Elsewhere, each file.
    """
    folder = Path(folder)
    if _syncfs(folder):
        return
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(folder)


def _syncfs(folder: Path) -> bool:
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(folder, os.O_RDONLY)
    try:
        return syncfs(fd) == 0
    finally:
        os.close(fd)


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success it is fsynced and renamed onto `path`.

    For writers that need a file name (``np.save``, ``fig.write_html``, safetensors).
    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _atomic_open(path: Path, mode: str, **kwargs: Any) -> Iterator[IO[Any]]:
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with _atomic_open(Path(path), "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text with '\\n' line ends, written atomically."""
    with _atomic_open(Path(path), "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any, *, indent: int = 2) -> Path:
    """JSON with sorted keys and a final newline; NaN and infinity are refused (not JSON)."""
    text = json.dumps(payload, indent=indent, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def read_json_object(path: str | os.PathLike, what: str,
                     error: type[WorkbenchError] = WorkbenchError) -> dict[str, Any]:
    """The JSON object in `path` (`what` names it, e.g. "the run record"); `error` otherwise.

    The one reader of the workbench's JSON documents (checkpoints, run records, metrics):
    a missing file, a folder, bytes that are not UTF-8 JSON (or nest too deeply) and a
    document that is not an object each get one line naming the file and what was expected.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise error(f"{path}: a folder; expected {what} (a JSON file)")
        if not stat.S_ISREG(mode):  # a fifo or a device would block or never end
            raise error(f"{path}: not a regular file; expected {what} (a JSON file)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: missing; expected {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc}); expected {what}") from exc
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise error(f"{path}: not valid JSON ({' '.join(str(exc).split())[:200]}); expected {what}") from exc
    if not isinstance(doc, dict):
        raise error(f"{path}: holds a JSON {type(doc).__name__}; expected {what} (a JSON object)")
    return doc


def save_tensors_atomic(
    path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> Path:
    """A safetensors file (contiguous CPU copies of `tensors`), written atomically."""
    from safetensors.torch import save_file

    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=dict(metadata) if metadata else None)
    return Path(path)


def write_parquet_atomic(path: str | os.PathLike, df: Any, compression: str = "zstd") -> Path:
    """A polars DataFrame as parquet, written atomically."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp, compression=compression)
    return Path(path)


# --------------------------------------------------------------------------- atomic folders


def _lock(folder: Path) -> int | None:
    """Hold an exclusive lock inside `folder` for as long as this process keeps the fd open."""
    if fcntl is None:
        return None
    fd = os.open(folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _is_abandoned(folder: Path) -> bool:
    """True when no live process holds `folder`'s writer lock (its writer died)."""
    lock = folder / _LOCK_NAME
    if fcntl is None or not lock.exists():
        # No lock file: either an older writer or a crash before the lock was taken.
        return True
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live writer holds it
    else:
        return True
    finally:
        os.close(fd)


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Delete staging folders of `target` left by writers that died; restore an orphaned backup.

    A fallback publish (two renames) that was interrupted between them leaves
    `target` missing and the previous folder at `.<name>.old-<id>`: it is moved
    back first. Returns the paths removed or restored.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    touched: list[Path] = []
    backups = sorted(parent.glob(f".{target.name}{BACKUP_MARK}*"))
    if backups and not target.exists():
        newest = max(backups, key=lambda p: p.stat().st_mtime)
        os.replace(newest, target)
        fsync_dir(parent)
        touched.append(newest)
        backups.remove(newest)
    for backup in backups:  # the publish finished: the backup is an old copy
        shutil.rmtree(backup, ignore_errors=True)
        touched.append(backup)
    for staging in sorted(parent.glob(f".{target.name}{STAGING_MARK}*")):
        if staging.is_dir() and _is_abandoned(staging):
            shutil.rmtree(staging, ignore_errors=True)
            touched.append(staging)
    return touched


def interrupted_publish(target: str | os.PathLike) -> Path | None:
    """The previous folder an interrupted publish left aside while `target` is missing, if any."""
    target = Path(target)
    if target.exists() or not target.parent.is_dir():
        return None
    backups = sorted(target.parent.glob(f".{target.name}{BACKUP_MARK}*"))
    return backups[-1] if backups else None


class StagingDir:
    """A locked staging folder beside `target`; see `staging_dir`."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target.parent / f".{target.name}{STAGING_MARK}{uuid.uuid4().hex[:8]}"
        self._fd: int | None = None

    def create(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(self.target)
        self.path.mkdir()
        self._fd = _lock(self.path)
        return self.path

    def files(self) -> list[str]:
        """Relative POSIX paths of the files staged so far (the writer's lock left out)."""
        return sorted(
            p.relative_to(self.path).as_posix()
            for p in self.path.rglob("*")
            if p.is_file() and p.relative_to(self.path).as_posix() != _LOCK_NAME
        )

    def publish(self) -> Path:
        """Move the staged folder onto the target (atomically where supported); drop the lock file."""
        (self.path / _LOCK_NAME).unlink(missing_ok=True)
        fsync_tree(self.path)
        publish_dir(self.path, self.target)
        return self.target

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def staging_dir(target: str | os.PathLike) -> Iterator[StagingDir]:
    """Build a folder beside `target`, then call ``.publish()``; on any exit the staging is removed.

    >>> with staging_dir(out) as st:
    ...     (st.path / "a.txt").write_text("...")
    ...     st.publish()
    """
    st = StagingDir(Path(target))
    st.create()
    try:
        yield st
    finally:
        st.close()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_dir(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the folder `staging` at `target`; an existing `target` is replaced, then removed.

    With RENAME_EXCHANGE the swap is one atomic step: `target` always holds a
    complete folder. Without it, the old folder is renamed aside to
    `.<name>.old-<id>` first; if the process dies before the second rename,
    `remove_stale_staging` (the next write) moves it back.
    """
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.replace(staging, target)
        fsync_dir(target.parent)
        return
    if _exchange(staging, target):
        fsync_dir(target.parent)
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old folder
        return
    backup = target.parent / f".{target.name}{BACKUP_MARK}{uuid.uuid4().hex[:8]}"
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    fsync_dir(target.parent)
    shutil.rmtree(backup, ignore_errors=True)
