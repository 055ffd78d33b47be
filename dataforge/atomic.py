"""Small files written whole or not at all: a temporary file in the same folder, fsync, rename
over the target, fsync of the folder. A reader sees the old content or the new, never a
truncated or half-written file (a crash, a full disk, two writers); a power loss after the call
returns keeps the new content. For local state files (pids, ports): not for an object store.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from pathlib import Path
from typing import Any


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk (before it is renamed into place)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new file in ``folder`` durable. A folder that cannot be opened, or a
    filesystem that cannot fsync a folder, is let be; any other error is raised."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, tmp_prefix: str | None = None,
                       sync_folder: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically. The new file gets the mode a plain ``open``
    would give it (0666 less the umask); the temporary file is removed when anything fails.
    ``tmp_prefix`` names the temporary file ``<prefix><name>.<random>`` (the run store's
    ``.tmp-`` files, which it clears after a crash); by default ``.<name>.<pid>.<random>.tmp``.
    ``sync_folder=False`` leaves the folder's fsync to the caller (the run store syncs it itself)."""
    path = Path(path)
    tmp = (path.with_name(f"{tmp_prefix}{path.name}.{secrets.token_hex(4)}") if tmp_prefix is not None
           else path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_folder:
        fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON atomically. ``obj`` is serialized before anything
    is written: one that does not serialize leaves the old file as it was."""
    write_text_atomic(path, json.dumps(obj, **dumps_kwargs))
