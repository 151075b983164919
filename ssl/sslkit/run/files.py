"""Writing run outputs so that no reader ever sees half a file and nothing is overwritten blindly.

Results, failure records and checkpoints are written to a temporary file in the target folder
and renamed over the target, so a run killed while writing leaves the previous version intact.
Files get the permissions of any other output (``0666`` minus the user's umask). Outputs that a
new run must not overwrite are set aside under a tagged name instead of being deleted.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as indented JSON with :func:`atomic_write`."""
    text = json.dumps(payload, indent=2, default=str)
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def set_aside(path: Path, tag: str) -> Path:
    """Rename ``path`` to ``<stem>.<tag><suffix>`` (``checkpoints.<tag>``, ``results.<tag>.json``),
    adding a counter when that name is taken; return the new path."""
    stem, suffix = (path.stem, path.suffix) if path.is_file() else (path.name, "")
    target = path.with_name(f"{stem}.{tag}{suffix}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{stem}.{tag}.{counter}{suffix}")
        counter += 1
    path.rename(target)
    return target
