"""Files written whole: the course's one atomic writer (datasets, checkpoint markers, manifests, reports).

A crash, a kill or a Colab disconnect in the middle of a write leaves either the old file or the new one, never half
of one: the bytes go to a temporary file beside the target, are flushed to disk (fsync), and the temporary file is
renamed over the target (`os.replace` is atomic on one file system). If writing fails, the temporary file is removed.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_open(path: str | Path, overwrite: bool = True) -> Iterator:
    """Open `path` for writing bytes, atomically (see the module's docstring). A new file is readable by everyone
    (0o644), like any saved artifact; a replaced file keeps its permissions. With overwrite=False an existing file
    is an error, raised before anything is written."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists: choose another name, or pass overwrite=True to replace it "
                              "(atomically: the old file stays intact until the new one is complete)")
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            try:
                os.fsync(stream.fileno())
            except OSError:  # some network file systems refuse fsync; the rename is still atomic
                pass
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str, overwrite: bool = True) -> Path:
    """Write a UTF-8 text file atomically; returns its path."""
    path = Path(path)
    with atomic_open(path, overwrite=overwrite) as stream:
        stream.write(text.encode("utf-8"))
    return path


def write_json(path: str | Path, data, overwrite: bool = True) -> Path:
    """Write `data` as indented JSON (UTF-8, non-ASCII kept as is), atomically."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", overwrite=overwrite)
