"""Where gdcode caches what it measures or loads once per machine (kernel tuning, bundled sets)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gdcode``, or ``~/.cache/gdcode``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gdcode"
