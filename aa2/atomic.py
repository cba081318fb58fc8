"""Writing files atomically: into a temporary file in the same folder, then `os.replace`.

`os.replace` within one folder (one file system) is atomic, so a crash, a full disk or Ctrl-C
mid-write leaves the previous file untouched (or no file), never half a file that a later run
would read as corrupt, and never a user's existing file destroyed by an output that failed.

A folder written as one output (PNG frames) is built the same way, as a temporary sibling folder,
and then takes the old folder's place by two renames: no reader ever sees a mix of two runs' files,
and the old folder is removed only once the new one is in.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import AA2InputError

log = logging.getLogger("aa2")


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


def foreign_entries(folder: str | Path, owned: Callable[[Path], bool]) -> list[Path]:
    """The entries of an existing `folder` that `owned` does not claim (a writer's own earlier
    files), in name order; none for a folder that does not exist yet."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((entry for entry in folder.iterdir() if not owned(entry)), key=lambda entry: entry.name)


@contextmanager
def atomic_folder(path: str | Path, *, owned: Callable[[Path], bool]) -> Iterator[Path]:
    """A temporary folder beside `path` to write to; when the block ends without an error it takes
    `path`'s place, and the folder it replaces is removed. That folder may hold only entries `owned`
    accepts (an earlier output's own files): anything else is the user's, and is refused here, before
    anything moves. The temporary folder is removed whatever happens. A link is followed, so the
    folder it points to is the one replaced."""
    path = Path(os.path.realpath(Path(path).expanduser()))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield temporary
        refuse_foreign_entries(path, owned)  # again: the folder may have changed while the frames were made
        _swap_in(temporary, path, owned)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)  # only ever our own files


def refuse_foreign_entries(folder: Path, owned: Callable[[Path], bool]) -> None:
    """Refuse to replace a folder that holds anything but an earlier output's own files."""
    if folder.exists() and not folder.is_dir():
        raise AA2InputError(f"{folder} is a file, not a folder: choose a folder for the output")
    foreign = foreign_entries(folder, owned)
    if foreign:
        listing = ", ".join(entry.name for entry in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise AA2InputError(f"the output folder {folder} holds {len(foreign)} file(s) an earlier output did not write "
                            f"({listing}); writing there would replace the folder and lose them. Choose a new or "
                            "empty folder.")


def _swap_in(new: Path, path: Path, owned: Callable[[Path], bool]) -> None:
    """Put folder `new` at `path`: the old folder steps aside first (a rename onto a non-empty folder
    fails on every system), comes back if the new one cannot go in, and is removed once it has."""
    if not path.exists():
        os.replace(new, path)
        return
    aside = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old.tmp")
    os.replace(path, aside)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(aside, path)
        raise
    _remove_owned_folder(aside, owned)


def _remove_owned_folder(folder: Path, owned: Callable[[Path], bool]) -> None:
    """Remove the replaced folder entry by entry, only what `owned` claims: a file that appeared in
    it since the check is left (with the folder), never deleted."""
    for entry in folder.iterdir():
        if owned(entry):
            entry.unlink()
    try:
        folder.rmdir()
    except OSError:
        log.warning("the replaced output folder %s still holds files that appeared during the run; it was kept",
                    folder)
