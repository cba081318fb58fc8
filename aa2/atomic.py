"""Writing files atomically: into a temporary file in the same folder, then `os.replace`.

`os.replace` within one folder (one file system) is atomic, so a crash, a full disk or Ctrl-C
mid-write leaves the previous file untouched (or no file), never half a file that a later run
would read as corrupt, and never a user's existing file destroyed by an output that failed.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path, *, keep_suffix: bool = False) -> Iterator[str]:
    """A temporary path beside `path` to write to; it replaces `path` when the block ends without an
    error, and is removed whatever happens. Its name is hidden and ends in `.tmp`, so that a folder
    listing (ComfyUI's dropdowns, a frame folder) never offers one a hard kill left behind, unless
    `keep_suffix`: for writers that pick the format from the suffix (OpenCV's video writer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{path.suffix}" if keep_suffix else ".tmp"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """`path.write_bytes(data)`, atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(data)
    return Path(path)
