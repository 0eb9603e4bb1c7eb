"""The run directory (DESIGN section 5): writer and reader.

``OUT/NAME/`` holds ``metadata.json``, ``metrics.jsonl`` (one JSON object per line, appended
and flushed as the run goes), ``workers.csv``, ``summary.json`` and ``model.npy``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WORKER_STATUSES = ("used", "ignored", "cancelled", "late")
WORKERS_HEADER = ("iteration", "worker", "arrival", "status")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


class RunWriter:
    """Writes one run directory; only the coordinating rank holds one.

    Parameters
    ----------
    path : path-like
        The run directory; created if missing.
    append : bool
        Continue existing metrics and workers files (a resumed run) instead of starting them.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        mode = "a" if append else "w"
        self._metrics = (self.path / "metrics.jsonl").open(mode, buffering=1)
        workers_path = self.path / "workers.csv"
        fresh = not append or not workers_path.exists()
        self._workers_fh = workers_path.open("w" if fresh else "a", newline="", buffering=1)
        self._workers = csv.writer(self._workers_fh)
        if fresh:
            self._workers.writerow(WORKERS_HEADER)

    def write_metadata(self, metadata: dict) -> None:
        _write_json(self.path / "metadata.json", metadata)

    def append_metrics(self, record: dict) -> None:
        """Append one iteration's record as one complete line, flushed at once."""
        self._metrics.write(json.dumps(_jsonable(record)) + "\n")
        self._metrics.flush()

    def append_workers(self, rows: list[tuple[int, int, float | None, str]]) -> None:
        """Rows of ``(iteration, worker, arrival seconds or None, status)``."""
        for it, worker, arrival, status in rows:
            assert status in WORKER_STATUSES, status
            self._workers.writerow((it, worker, "" if arrival is None else f"{arrival:.6f}", status))
        self._workers_fh.flush()

    def write_summary(self, summary: dict) -> None:
        _write_json(self.path / "summary.json", summary)

    def save_model(self, params: np.ndarray) -> None:
        np.save(self.path / "model.npy", params)

    def close(self) -> None:
        self._metrics.close()
        self._workers_fh.close()


@dataclass
class Run:
    """A run directory read back: what plots, notebooks and tests use."""

    path: Path
    metadata: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    summary: dict | None = None

    def column(self, key: str) -> np.ndarray:
        """One metrics key over the iterations (NaN where a line lacks it)."""
        return np.array([m.get(key, np.nan) if m.get(key) is not None else np.nan for m in self.metrics],
                        dtype=float)

    @property
    def model(self) -> np.ndarray:
        return np.load(self.path / "model.npy")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Every complete line of ``metrics.jsonl``; a torn last line (a killed run) is skipped."""
    out = []
    with Path(path).open() as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            out.append(json.loads(line))
    return out


def read_workers(path: str | os.PathLike) -> list[dict]:
    """Rows of ``workers.csv`` with ``iteration``/``worker`` as int and ``arrival`` as float or None."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["iteration"] = int(r["iteration"])
        r["worker"] = int(r["worker"])
        r["arrival"] = float(r["arrival"]) if r["arrival"] else None
    return rows


def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory; files that a killed run did not write are left empty."""
    p = Path(path)
    if not (p / "metrics.jsonl").exists():
        raise FileNotFoundError(f"{p} is not a gdcode run directory (no metrics.jsonl)")
    run = Run(path=p, metrics=read_metrics(p / "metrics.jsonl"))
    if (p / "metadata.json").exists():
        run.metadata = json.loads((p / "metadata.json").read_text())
    if (p / "workers.csv").exists():
        run.workers = read_workers(p / "workers.csv")
    if (p / "summary.json").exists():
        run.summary = json.loads((p / "summary.json").read_text())
    return run
