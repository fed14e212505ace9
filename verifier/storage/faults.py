"""Storage faults at run time, in words a caller and an operator can act on,
the errors a store raises (:class:`StoreError` and its kinds), and whether an
open file is still the file at its path.

A full disk, an I/O error or a read-only remount reaches us as an
:class:`OSError` or as a SQLite error; :func:`fault_of` names which it is
(``disk_full``, ``read_only``, ``io_error``, ``corrupt``, ``missing``), for the
refusal's details and the log. A process's file-size limit (``RLIMIT_FSIZE``,
what the tests use to fill the disk without root) reaches SQLite as a failed
write and is named ``io_error``.

A file removed, moved or replaced while a process holds it open is still
written through the open descriptor, into a file no one will open again.
:class:`FileIdentity` (device and inode) tells the file at a path from the one
that was opened, so a store can refuse to acknowledge a write into a file that
is no longer the store.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

class StoreError(Exception):
    """The store cannot be used: of another schema, held by another process, or failing."""


class StoreMissing(StoreError):
    """No store where one is configured: it must be created (or restored) by an operator."""


class StoreFailure(StoreError):
    """SQLite failed underneath a read or write (disk full, read-only, I/O error, corruption)."""


DISK_FULL = "disk_full"
READ_ONLY = "read_only"
IO_ERROR = "io_error"
CORRUPT = "corrupt"
MISSING = "missing"
OTHER = "other"

_ERRNO_FAULTS = {
    errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EFBIG: DISK_FULL,
    errno.EROFS: READ_ONLY, errno.EACCES: READ_ONLY, errno.EPERM: READ_ONLY,
    errno.EIO: IO_ERROR, errno.ENOENT: MISSING,
}
# SQLite's primary result codes (the prefix of its extended error names).
_SQLITE_FAULTS = {
    "SQLITE_FULL": DISK_FULL, "SQLITE_READONLY": READ_ONLY, "SQLITE_IOERR": IO_ERROR,
    "SQLITE_CORRUPT": CORRUPT, "SQLITE_NOTADB": CORRUPT, "SQLITE_CANTOPEN": MISSING,
    "SQLITE_PERM": READ_ONLY,
}


def fault_of(error: BaseException) -> str:
    """Which storage fault ``error`` (or the error it was raised from) is."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error):
            name = getattr(current, "sqlite_errorname", "") or ""
            for prefix, fault in _SQLITE_FAULTS.items():
                if name == prefix or name.startswith(prefix + "_"):
                    return fault
        elif isinstance(current, OSError) and current.errno in _ERRNO_FAULTS:
            return _ERRNO_FAULTS[current.errno]
        current = current.__cause__ or current.__context__
    return OTHER


@dataclass(frozen=True)
class FileIdentity:
    """A file as the file system knows it, whatever its name: device and inode."""

    device: int
    inode: int

    @classmethod
    def at(cls, path: Path | str) -> "FileIdentity | None":
        """The file now at ``path``; None when there is none."""
        try:
            found = os.stat(path)
        except FileNotFoundError:
            return None
        return cls(found.st_dev, found.st_ino)

    @classmethod
    def of_descriptor(cls, fd: int) -> "FileIdentity":
        found = os.fstat(fd)
        return cls(found.st_dev, found.st_ino)
