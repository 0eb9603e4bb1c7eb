"""The run directory: writer and reader (the files are described in ``docs/run-directory.md``).

``OUT/NAME/`` holds ``options.json``, ``metadata.json``, ``metrics.jsonl`` (one JSON object per
line, appended and flushed as the run goes), ``workers.csv``, ``summary.json`` and
``model.npy``. Whole files (JSON documents, the model) are written to a temporary file and
renamed, so a reader sees the old file or the new one, never a part; the appended files are
read up to their last complete line. A write that fails (a full disk) raises
:class:`RunDirError` naming the file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

WORKER_STATUSES = ("used", "ignored", "cancelled", "late", "dead")
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


class RunDirError(OSError):
    """A file of the run directory could not be written (e.g. the disk is full)."""


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | os.PathLike, write: Any) -> None:
    """Write ``path`` through ``write(file_object)`` into a temporary file, then rename it over ``path``.

    Raises
    ------
    RunDirError
        When writing fails; the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunDirError(exc.errno, f"cannot write {path}: {exc.strerror}") from None


def _write_json(path: Path, data: dict) -> None:
    text = (json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n").encode()
    write_atomic(path, lambda fh: fh.write(text))


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
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            mode = "a" if append else "w"
            self._metrics = (self.path / "metrics.jsonl").open(mode, buffering=1)
            workers_path = self.path / "workers.csv"
            fresh = not append or not workers_path.exists()
            self._workers_fh = workers_path.open("w" if fresh else "a", newline="", buffering=1)
            self._workers = csv.writer(self._workers_fh)
            if fresh:
                self._workers.writerow(WORKERS_HEADER)
                self._workers_fh.flush()
        except OSError as exc:
            raise RunDirError(exc.errno, f"cannot write the run directory {self.path}: {exc.strerror}") from None

    def write_metadata(self, metadata: dict) -> None:
        _write_json(self.path / "metadata.json", metadata)

    def append_metrics(self, record: dict) -> None:
        """Append one iteration's record as one complete line, flushed at once."""
        self._append(self._metrics, json.dumps(_jsonable(record)) + "\n")

    def append_workers(self, rows: list[tuple[int, int, float | None, str]]) -> None:
        """Rows of ``(iteration, worker, arrival seconds or None, status)``."""
        if not rows:
            return
        out = io.StringIO()
        writer = csv.writer(out)
        for it, worker, arrival, status in rows:
            assert status in WORKER_STATUSES, status
            writer.writerow((it, worker, "" if arrival is None else f"{arrival:.6f}", status))
        self._append(self._workers_fh, out.getvalue())

    def _append(self, fh: IO[str], text: str) -> None:
        try:
            fh.write(text)
            fh.flush()
        except OSError as exc:
            raise RunDirError(exc.errno, f"cannot write {fh.name}: {exc.strerror}") from None

    def write_summary(self, summary: dict) -> None:
        _write_json(self.path / "summary.json", summary)

    def save_model(self, params: np.ndarray) -> None:
        write_atomic(self.path / "model.npy", lambda fh: np.save(fh, params))

    def close(self) -> None:
        for fh in (self._metrics, self._workers_fh):
            try:
                fh.close()
            except OSError:  # a full disk: what was flushed is there, the rest is lost
                pass


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
    """Rows of ``workers.csv`` with ``iteration``/``worker`` as int and ``arrival`` as float or None.

    A torn last line (a killed run, a full disk) is skipped.
    """
    text = Path(path).read_text()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
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
