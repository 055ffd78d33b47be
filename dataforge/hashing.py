"""The one file hash: sha256 of a file's bytes, read in 1 MiB blocks."""

from __future__ import annotations

import functools
import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of the file at ``path`` (streamed: any size, constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=32)
def file_version_sha256(path: str, mtime_ns: int, size: int) -> str:
    """:func:`file_sha256` of one version of a file (its path, mtime and size), hashed once per
    process: a model file the stages ask about several times a run is read again only when it
    changes."""
    return file_sha256(path)


def file_sha256_cached(path: str | os.PathLike) -> str:
    """:func:`file_sha256`, from the cache while the file's mtime and size are unchanged."""
    st = os.stat(path)
    return file_version_sha256(str(path), st.st_mtime_ns, st.st_size)
