"""Owner-only data: whatever the service keeps under its data folder (the
watch-list store and snapshots, the audit trail, the gate's answers, the
registry's key and snapshot, replication scratch) holds biometric data or
decides who passes, so nobody but the service's own user may read or change
it.

The server runs with umask 077, so every file it or a library (SQLite's WAL
and shared memory, FAISS snapshots) creates is 0600 and every folder 0700.
Looser modes found at start (a restore from a backup tool, an older version,
a careless ``chmod``) are tightened before anything is opened, each one
logged; a path the service cannot tighten stops the start.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from verifier.config import Settings

log = logging.getLogger(__name__)

# Bits no one but the owner may hold on the service's data.
OTHERS = 0o077
SERVICE_UMASK = 0o077


def write_private(path: Path, chunks: Iterable[bytes], mode: int = 0o600) -> None:
    """Write ``path`` atomically and durably, owner-only: a temporary file beside
    it, fsync, rename, fsync of the folder (made 0700 if absent)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(descriptor, mode)
    with os.fdopen(descriptor, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def service_folders(settings: Settings) -> list[Path]:
    """The folders under the data folder that the service writes to."""
    data = settings.data_dir
    files = [settings.watchlist.store_file(data), settings.watchlist.snapshot_file(data),
             settings.audit.file(data), settings.gate.transactions_file(data), settings.registry.key_file(data),
             settings.registry.snapshot_file(data)]
    folders = {path.parent for path in files if path is not None} | {data / "replication",
                                                                       settings.watchlist.markers_folder(data)}
    return sorted(folders)


def tighten(settings: Settings) -> list[Path]:
    """Take every permission of group and others off the data folder, the
    service's folders and everything in them; returns the paths changed (each
    logged with its old and new mode). Symbolic links are not followed: a link
    is left alone, as is what it points at. Raises OSError where a mode
    cannot be changed (a path owned by another user)."""
    changed: list[Path] = []
    if settings.data_dir.is_dir():
        _tighten_one(settings.data_dir, changed)
    for folder in service_folders(settings):
        if folder.is_symlink() or not folder.is_dir():
            continue
        for current, _, names in os.walk(folder):
            here = Path(current)
            _tighten_one(here, changed)
            for name in names:
                _tighten_one(here / name, changed)
    return changed


def _tighten_one(path: Path, changed: list[Path]) -> None:
    status = os.lstat(path)
    if stat.S_ISLNK(status.st_mode):
        return
    mode = stat.S_IMODE(status.st_mode)
    if mode & OTHERS:
        os.chmod(path, mode & ~OTHERS)
        log.warning("tightened %s from %04o to %04o: the service's data is owner-only", path, mode, mode & ~OTHERS)
        changed.append(path)
