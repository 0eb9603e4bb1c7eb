"""Where gdcode caches what it measures or loads once per machine (kernel tuning, bundled sets)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gdcode``, or ``~/.cache/gdcode``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gdcode"


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write the cache file ``path`` through ``write(binary_file)`` into a temporary file of
    its directory (made if missing), then rename it over ``path``: processes writing at once
    each leave a whole file, and readers never see half of one.

    Raises
    ------
    OSError
        When the file cannot be written; the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
