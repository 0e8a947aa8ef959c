"""Where the read side writes: checked before any work, replaced whole or not at all.

A file is written beside its destination under a hidden temporary name and
renamed over it, so a killed command leaves the old file or the new one, never
half of one; readers of an export directory skip hidden names. A device or a
pipe (``/dev/stdout``, a FIFO) is streamed into instead: renaming over it would
replace the device with a regular file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from CandleThrob.errors import ReadRequestError


def check_file(path: Path, option: str) -> Path:
    """``path`` can be written as a file; its folder is created if needed."""
    path = Path(path)
    if path.is_dir():
        raise ReadRequestError(f"{option} {path} is a directory; expected a file path such as {path / 'bars.csv'}")
    if is_special(path):
        if not os.access(path, os.W_OK):
            raise ReadRequestError(f"{option} {path} cannot be written; expected a writable file")
        return path
    _probe(path.parent, option, path)
    return path


def check_directory(path: Path, option: str) -> Path:
    """``path`` is (or can be created as) a writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ReadRequestError(f"{option} {path} is a file; expected a directory (it is created if missing)")
    _probe(path, option, path)
    return path


def is_special(path: Path) -> bool:
    """A device or pipe, streamed into rather than replaced."""
    return path.exists() and not path.is_file() and not path.is_dir()


def temporary(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.tmp"


@contextlib.contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """A temporary path to write; on success it is synced and renamed to ``path``, on failure removed."""
    path = Path(path)
    if is_special(path):
        yield path
        return
    tmp = temporary(path)
    try:
        yield tmp
        with open(tmp, "rb") as written:  # the data reach the disk before the name points at them
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _probe(folder: Path, option: str, shown: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".candlethrob-probe.{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ReadRequestError(f"{option} {shown} cannot be written ({exc.strerror}); expected a path in a "
                               "writable folder") from None
