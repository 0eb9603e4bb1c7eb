"""Checkpoints of a coded run: the optimiser's state, the iteration and the elapsed time.

Workers hold no state between iterations (their delays are pure functions of the seed,
worker and iteration), so the coordinator's checkpoint is all a resumed run needs to give
the same losses, delays and random streams as an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gdcode.errors import ConfigError
from gdcode.results import write_atomic

FILE = "checkpoint.npz"


def save(run_dir: Path, iteration: int, elapsed: float, optimizer) -> None:
    """Write ``checkpoint.npz`` atomically (a kill mid-write leaves the previous one).

    Raises
    ------
    gdcode.results.RunDirError
        When it cannot be written (the previous checkpoint stays).
    """
    arrays: dict[str, Any] = {f"opt_{k}": np.asarray(v) for k, v in optimizer.state().items()}
    arrays.update(iteration=np.array(iteration), elapsed=np.array(elapsed))
    write_atomic(Path(run_dir) / FILE, lambda fh: np.savez(fh, **arrays))


def load(run_dir: Path) -> dict:
    """The last checkpoint: ``iteration``, ``elapsed`` and the optimiser's ``state`` arrays."""
    path = Path(run_dir) / FILE
    if not path.exists():
        raise ConfigError(f"--resume {run_dir}: no {FILE} there; the run must have been started with "
                          "--checkpoint-every K and have reached iteration K")
    with np.load(path) as z:
        return {"iteration": int(z["iteration"]), "elapsed": float(z["elapsed"]),
                "optimizer": {k[4:]: z[k] for k in z.files if k.startswith("opt_")}}


def read_metadata(run_dir: Path) -> dict:
    """``metadata.json`` of a run directory, with a clear error when it is not one."""
    path = Path(run_dir) / "metadata.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--resume {run_dir}: not a gdcode run directory (no metadata.json)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--resume {run_dir}: metadata.json is not valid JSON ({exc})") from None
